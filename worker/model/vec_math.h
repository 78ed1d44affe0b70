// Internal: scalar helpers for the vectorised CPU kernels (loss, attention,
// norms). Written so that GCC vectorises the loops that call them when the
// kernel file is built with -O3 -fno-math-errno inside target_clones
// functions (TOPIARY_KERNEL_CLONES): always inlined, branch-free selects,
// bit casts through memcpy. bf16 values travel as their bits (uint16_t).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#define TOPIARY_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define TOPIARY_KERNEL_INLINE inline __attribute__((always_inline))

namespace topiary::kernels {

// Independent partial sums per loop: vectorise without reassociation flags.
constexpr int kLanes = 16;

TOPIARY_KERNEL_INLINE float Load(float x) { return x; }
TOPIARY_KERNEL_INLINE float Load(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, NaN kept a quiet NaN: what c10::BFloat16 does.
TOPIARY_KERNEL_INLINE uint16_t ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return f != f ? uint16_t{0x7FC0} : static_cast<uint16_t>(r);
}
TOPIARY_KERNEL_INLINE void Store(float* p, float f) { *p = f; }
TOPIARY_KERNEL_INLINE void Store(uint16_t* p, float f) { *p = ToBf16(f); }

// e^x for x <= 0 (arguments are value − row max): 2^n · p(r) with
// x = n ln2 + r, |r| <= ln2/2, p the degree-6 Taylor polynomial (relative
// error below 2e-7). Underflows to 0 below −87 (−∞ gives 0); NaN stays NaN.
TOPIARY_KERNEL_INLINE float ExpNonPositive(float x) {
  const float xc = x < -87.0f ? -87.0f : x;
  const float n = std::nearbyint(xc * 1.44269504f);
  const float r = (xc - n * 0.693145752f) - n * 1.42860677e-6f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  const float e = p * scale;
  return x < -87.0f ? 0.0f : (x != x ? x : e);
}

// max over x[0, n); a NaN element is skipped here (callers' sums carry it).
template <typename T>
TOPIARY_KERNEL_INLINE float RowMax(const T* __restrict x, int64_t n) {
  float acc[kLanes];
  for (float& a : acc) a = -INFINITY;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float v = Load(x[i + j]);
      acc[j] = v > acc[j] ? v : acc[j];
    }
  }
  float m = -INFINITY;
  for (; i < n; ++i) {
    const float v = Load(x[i]);
    m = v > m ? v : m;
  }
  for (float a : acc) m = a > m ? a : m;
  return m;
}

// Σ e^{(x − m)·k} over x[0, n)
template <typename T>
TOPIARY_KERNEL_INLINE double SumExp(const T* __restrict x, int64_t n, float m, float k) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += ExpNonPositive((Load(x[i + j]) - m) * k);
  }
  double total = 0;
  for (; i < n; ++i) total += ExpNonPositive((Load(x[i]) - m) * k);
  for (float a : acc) total += a;
  return total;
}

// out[i] = e^{(x_i − m)·k} over x[0, n); returns Σ out.
template <typename T>
TOPIARY_KERNEL_INLINE double ExpSum(const T* __restrict x, int64_t n, float m, float k, float* __restrict out) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float e = ExpNonPositive((Load(x[i + j]) - m) * k);
      out[i + j] = e;
      acc[j] += e;
    }
  }
  double total = 0;
  for (; i < n; ++i) {
    out[i] = ExpNonPositive((Load(x[i]) - m) * k);
    total += out[i];
  }
  for (float a : acc) total += a;
  return total;
}

}  // namespace topiary::kernels
