// Row-and-column selection of a row-major matrix, src[rows][:, cols], the
// kernel of width pruning (docs/design.md, "The algorithms"). Torch-free: the
// checkpoint writer gathers piece by piece into a small reused buffer with it,
// and ApplyPlan into a whole tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace topiary::model {

// How the columns of a row are picked. Sorted columns (what a prune plan
// keeps) are a compress: each chunk of the source row is packed by a bit mask
// of its kept bytes, 64 bytes per step with AVX-512 VBMI2, 16 with SSSE3
// (elements of 2 bytes or more). Element by element otherwise.
enum class GatherKernel { kScalar, kSsse3, kAvx512 };

// The fastest kernel this CPU runs.
GatherKernel BestGatherKernel();
// Whether this CPU runs `k`.
bool GatherKernelRuns(GatherKernel k);

// Writes rows [row_begin, row_end) of the selection into dst (packed,
// cols.size() elements per row; `all_cols` copies whole rows of src_cols
// elements instead). Elements are `element_size` bytes (1, 2, 4 or 8).
// Writes nothing outside those rows of dst and reads nothing outside the
// selected rows of src.
void GatherRows(const void* src, int64_t src_cols, size_t element_size, const std::vector<int64_t>& rows,
                const std::vector<int64_t>& cols, bool all_cols, int64_t row_begin, int64_t row_end, void* dst);
// The same with a given kernel (tests; one the CPU cannot run, or unsorted
// columns, fall back to element by element).
void GatherRowsWith(GatherKernel k, const void* src, int64_t src_cols, size_t element_size,
                    const std::vector<int64_t>& rows, const std::vector<int64_t>& cols, int64_t row_begin,
                    int64_t row_end, void* dst);

// True when idx is 0, 1, ..., n-1 (a selection that keeps everything).
bool IsIdentity(const std::vector<int64_t>& idx, int64_t n);
// 0, 1, ..., n-1: the selection that keeps everything.
std::vector<int64_t> AllOf(int64_t n);

// Maps now, in one call per run of consecutive rows, the pages of src that
// rows [row_begin, row_end) of the selection read (a mapped checkpoint is
// otherwise read a fault at a time). Advisory: errors are ignored.
void MapRows(const void* src, int64_t src_cols, size_t element_size, const std::vector<int64_t>& rows,
             int64_t row_begin, int64_t row_end);

}  // namespace topiary::model
