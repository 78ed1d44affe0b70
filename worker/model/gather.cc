#include "worker/model/gather.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#define TOPIARY_GATHER_X86 1
#else
#define TOPIARY_GATHER_X86 0
#endif

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

void GatherScalar(const uint8_t* src, int64_t src_cols, size_t element_size, const std::vector<int64_t>& rows,
                  const std::vector<int64_t>& cols, int64_t begin, int64_t end, uint8_t* dst) {
  switch (element_size) {
    case 1:
      return GatherTyped<uint8_t>(src, src_cols, rows, cols, begin, end, dst);
    case 2:
      return GatherTyped<uint16_t>(src, src_cols, rows, cols, begin, end, dst);
    case 4:
      return GatherTyped<uint32_t>(src, src_cols, rows, cols, begin, end, dst);
    default:
      return GatherTyped<uint64_t>(src, src_cols, rows, cols, begin, end, dst);
  }
}

bool StrictlyIncreasing(const std::vector<int64_t>& v) {
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] <= v[i - 1]) return false;
  }
  return true;
}

// Bit b of masks[k] is set when unit k * bits + b of a source row belongs to
// a kept column (units of `unit` bytes; a row is `row_units` of them).
template <typename Word>
std::vector<Word> KeptMasks(const std::vector<int64_t>& cols, size_t element_size, size_t unit, size_t row_units) {
  constexpr size_t kBits = sizeof(Word) * 8;
  std::vector<Word> masks((row_units + kBits - 1) / kBits, 0);
  const size_t per = element_size / unit;
  for (int64_t c : cols) {
    for (size_t u = static_cast<size_t>(c) * per; u < static_cast<size_t>(c + 1) * per; ++u) {
      masks[u / kBits] |= Word{1} << (u % kBits);
    }
  }
  return masks;
}

#if TOPIARY_GATHER_X86
// 64 bytes a step: a chunk is loaded, its kept bytes packed to the front and
// stored. The loads of a row's last partial chunk, and the stores that would
// pass dst_end, are masked (a masked load costs 3x a plain one here); a full
// 64-byte store may run past the packed bytes into the next row's place
// (written later).
__attribute__((target("avx512f,avx512bw,avx512vbmi2,popcnt"))) void CompressAvx512(
    const uint8_t* src, size_t row_bytes, const std::vector<int64_t>& rows, const std::vector<uint64_t>& masks,
    int64_t begin, int64_t end, uint8_t* dst, const uint8_t* dst_end) {
  const size_t whole = row_bytes / 64;
  for (int64_t r = begin; r < end; ++r) {
    const uint8_t* in = src + static_cast<size_t>(rows[r]) * row_bytes;
    for (size_t k = 0; k < masks.size(); ++k) {
      const uint64_t m = masks[k];
      if (m == 0) continue;
      const __m512i v = k < whole ? _mm512_loadu_si512(in + 64 * k) : _mm512_maskz_loadu_epi8(m, in + 64 * k);
      const __m512i packed = _mm512_maskz_compress_epi8(m, v);
      const int n = __builtin_popcountll(m);
      if (dst + 64 <= dst_end) {
        _mm512_storeu_si512(dst, packed);
      } else {
        _mm512_mask_storeu_epi8(dst, n == 64 ? ~0ULL : (1ULL << n) - 1, packed);
      }
      dst += n;
    }
  }
}

// Byte shuffles that pack the kept 2-byte units of 16 bytes to the front.
struct PackTable {
  alignas(16) uint8_t shuffle[256][16];
  PackTable() {
    for (int m = 0; m < 256; ++m) {
      int o = 0;
      for (int b = 0; b < 8; ++b) {
        if (m & (1 << b))
          shuffle[m][o++] = static_cast<uint8_t>(2 * b), shuffle[m][o++] = static_cast<uint8_t>(2 * b + 1);
      }
      while (o < 16) shuffle[m][o++] = 0x80;
    }
  }
};

// 16 bytes (8 units of 2) a step; a row's last partial chunk unit by unit. A
// full 16-byte store may run past the packed bytes into the next row's place
// (written later), never past dst_end.
__attribute__((target("ssse3,popcnt"))) void CompressSsse3(const uint8_t* src, size_t row_bytes,
                                                           const std::vector<int64_t>& rows,
                                                           const std::vector<uint8_t>& masks, int64_t begin,
                                                           int64_t end, uint8_t* dst, const uint8_t* dst_end) {
  static const PackTable table;
  const size_t full = row_bytes / 16;
  for (int64_t r = begin; r < end; ++r) {
    const uint8_t* in = src + static_cast<size_t>(rows[r]) * row_bytes;
    for (size_t k = 0; k < full; ++k) {
      const unsigned m = masks[k];
      if (m == 0) continue;
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 16 * k));
      const __m128i packed = _mm_shuffle_epi8(v, _mm_load_si128(reinterpret_cast<const __m128i*>(table.shuffle[m])));
      const size_t n = 2 * static_cast<size_t>(__builtin_popcount(m));
      if (dst + 16 <= dst_end) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), packed);
      } else {
        alignas(16) uint8_t last[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(last), packed);
        std::memcpy(dst, last, n);
      }
      dst += n;
    }
    if (full < masks.size()) {
      for (unsigned b = 0, m = masks[full]; m != 0; ++b, m >>= 1) {
        if (m & 1) std::memcpy(dst, in + 16 * full + 2 * b, 2), dst += 2;
      }
    }
  }
}
#endif

}  // namespace

bool GatherKernelRuns(GatherKernel k) {
#if TOPIARY_GATHER_X86
  __builtin_cpu_init();
  switch (k) {
    case GatherKernel::kAvx512:
      return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi2") &&
             __builtin_cpu_supports("popcnt");
    case GatherKernel::kSsse3:
      return __builtin_cpu_supports("ssse3") && __builtin_cpu_supports("popcnt");
    case GatherKernel::kScalar:
      return true;
  }
#endif
  return k == GatherKernel::kScalar;
}

GatherKernel BestGatherKernel() {
  static const GatherKernel best = GatherKernelRuns(GatherKernel::kAvx512)  ? GatherKernel::kAvx512
                                   : GatherKernelRuns(GatherKernel::kSsse3) ? GatherKernel::kSsse3
                                                                            : GatherKernel::kScalar;
  return best;
}

bool IsIdentity(const std::vector<int64_t>& idx, int64_t n) {
  if (static_cast<int64_t>(idx.size()) != n) return false;
  for (int64_t i = 0; i < n; ++i) {
    if (idx[i] != i) return false;
  }
  return true;
}

std::vector<int64_t> AllOf(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

void GatherRowsWith(GatherKernel k, const void* src, int64_t src_cols, size_t element_size,
                    const std::vector<int64_t>& rows, const std::vector<int64_t>& cols, int64_t row_begin,
                    int64_t row_end, void* dst) {
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  const size_t row_bytes = static_cast<size_t>(src_cols) * element_size;
  // Packing scans every chunk of the row: worth it when at least 1/8 of it is kept.
  const bool compress = cols.size() * element_size * 8 >= row_bytes && StrictlyIncreasing(cols) &&
                        GatherKernelRuns(k) && k != GatherKernel::kScalar;
#if TOPIARY_GATHER_X86
  const uint8_t* end = d + static_cast<size_t>(row_end - row_begin) * cols.size() * element_size;
  if (compress && k == GatherKernel::kAvx512) {
    return CompressAvx512(s, row_bytes, rows, KeptMasks<uint64_t>(cols, element_size, 1, row_bytes), row_begin, row_end,
                          d, end);
  }
  if (compress && k == GatherKernel::kSsse3 && element_size >= 2) {
    return CompressSsse3(s, row_bytes, rows, KeptMasks<uint8_t>(cols, element_size, 2, row_bytes / 2), row_begin,
                         row_end, d, end);
  }
#else
  (void)compress;
#endif
  GatherScalar(s, src_cols, element_size, rows, cols, row_begin, row_end, d);
}

void GatherRows(const void* src, int64_t src_cols, size_t element_size, const std::vector<int64_t>& rows,
                const std::vector<int64_t>& cols, bool all_cols, int64_t row_begin, int64_t row_end, void* dst) {
  if (all_cols) {
    const auto* s = static_cast<const uint8_t*>(src);
    auto* d = static_cast<uint8_t*>(dst);
    const size_t row_bytes = static_cast<size_t>(src_cols) * element_size;
    for (int64_t r = row_begin; r < row_end; ++r) {
      std::memcpy(d + (r - row_begin) * row_bytes, s + rows[r] * row_bytes, row_bytes);
    }
    return;
  }
  GatherRowsWith(BestGatherKernel(), src, src_cols, element_size, rows, cols, row_begin, row_end, dst);
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
