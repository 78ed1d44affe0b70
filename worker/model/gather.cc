#include "worker/model/gather.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

namespace topiary::model {
namespace {

template <typename T>
void GatherTyped(const uint8_t* src, int64_t src_cols, const std::vector<int64_t>& rows,
                 const std::vector<int64_t>& cols, int64_t begin, int64_t end, uint8_t* dst) {
  const int64_t n = static_cast<int64_t>(cols.size());
  const int64_t* c = cols.data();
  for (int64_t r = begin; r < end; ++r) {
    const T* in = reinterpret_cast<const T*>(src) + rows[r] * src_cols;
    T* out = reinterpret_cast<T*>(dst) + (r - begin) * n;
    for (int64_t j = 0; j < n; ++j) out[j] = in[c[j]];
  }
}

}  // namespace

bool IsIdentity(const std::vector<int64_t>& idx, int64_t n) {
  if (static_cast<int64_t>(idx.size()) != n) return false;
  for (int64_t i = 0; i < n; ++i) {
    if (idx[i] != i) return false;
  }
  return true;
}

void GatherRows(const void* src, int64_t src_cols, size_t element_size, const std::vector<int64_t>& rows,
                const std::vector<int64_t>& cols, bool all_cols, int64_t row_begin, int64_t row_end, void* dst) {
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  if (all_cols) {
    const size_t row_bytes = static_cast<size_t>(src_cols) * element_size;
    for (int64_t r = row_begin; r < row_end; ++r) {
      std::memcpy(d + (r - row_begin) * row_bytes, s + rows[r] * row_bytes, row_bytes);
    }
    return;
  }
  switch (element_size) {
    case 1:
      return GatherTyped<uint8_t>(s, src_cols, rows, cols, row_begin, row_end, d);
    case 2:
      return GatherTyped<uint16_t>(s, src_cols, rows, cols, row_begin, row_end, d);
    case 4:
      return GatherTyped<uint32_t>(s, src_cols, rows, cols, row_begin, row_end, d);
    default:
      return GatherTyped<uint64_t>(s, src_cols, rows, cols, row_begin, row_end, d);
  }
}

void MapRows(const void* src, int64_t src_cols, size_t element_size, const std::vector<int64_t>& rows,
             int64_t row_begin, int64_t row_end) {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t base = reinterpret_cast<uintptr_t>(src), row_bytes = static_cast<uintptr_t>(src_cols) * element_size;
  for (int64_t r = row_begin; r < row_end;) {
    int64_t e = r + 1;
    while (e < row_end && rows[e] == rows[e - 1] + 1) ++e;
    const uintptr_t first = (base + static_cast<uintptr_t>(rows[r]) * row_bytes) / page * page;
    const uintptr_t end = base + static_cast<uintptr_t>(rows[e - 1] + 1) * row_bytes;
    ::madvise(reinterpret_cast<void*>(first), end - first, MADV_POPULATE_READ);
    r = e;
  }
}

}  // namespace topiary::model
