#include "worker/train/adamw_kernel.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <type_traits>

#include "worker/model/vec_math.h"

// Built with -O3 -fno-math-errno (see CMakeLists.txt) so that the loops
// below vectorise, sqrt included.
namespace topiary::train::internal {
namespace {

using kernels::kLanes;
using kernels::Load;
using kernels::ToBf16;

constexpr int64_t kGrain = 1 << 14;

template <typename G, typename W>
TOPIARY_KERNEL_INLINE void UpdateBody(const G* __restrict g, float* __restrict m, float* __restrict v,
                                      float* __restrict master, W* __restrict w, int64_t n, AdamWStep s) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = Load(g[i]) * s.scale;
    const float mi = s.b1 * m[i] + (1 - s.b1) * gi;
    const float vi = s.b2 * v[i] + (1 - s.b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float p = master[i] * s.decay - s.lr_bc1 * mi / (std::sqrt(vi * s.inv_bc2) + s.eps);
    master[i] = p;
    if constexpr (std::is_same_v<W, uint16_t>) w[i] = ToBf16(p);
  }
}

// One clone set per (gradient, weight) type pair: target_clones does not
// apply to templates.
TOPIARY_KERNEL_CLONES void UpdateFF(const float* g, float* m, float* v, float* master, int64_t n, AdamWStep s) {
  UpdateBody<float, float>(g, m, v, master, nullptr, n, s);
}
TOPIARY_KERNEL_CLONES void UpdateFB(const float* g, float* m, float* v, float* master, uint16_t* w, int64_t n,
                                    AdamWStep s) {
  UpdateBody<float, uint16_t>(g, m, v, master, w, n, s);
}
TOPIARY_KERNEL_CLONES void UpdateBF(const uint16_t* g, float* m, float* v, float* master, int64_t n, AdamWStep s) {
  UpdateBody<uint16_t, float>(g, m, v, master, nullptr, n, s);
}
TOPIARY_KERNEL_CLONES void UpdateBB(const uint16_t* g, float* m, float* v, float* master, uint16_t* w, int64_t n,
                                    AdamWStep s) {
  UpdateBody<uint16_t, uint16_t>(g, m, v, master, w, n, s);
}

template <typename T>
TOPIARY_KERNEL_INLINE float SumSquaresBody(const T* __restrict x, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float f = Load(x[i + j]);
      acc[j] += f * f;
    }
  }
  float total = 0;
  for (; i < n; ++i) total += Load(x[i]) * Load(x[i]);
  for (float a : acc) total += a;
  return total;
}
TOPIARY_KERNEL_CLONES float SumSquaresF(const float* x, int64_t n) { return SumSquaresBody(x, n); }
TOPIARY_KERNEL_CLONES float SumSquaresB(const uint16_t* x, int64_t n) { return SumSquaresBody(x, n); }

template <typename Fn>
double ParallelSumSquares(int64_t n, Fn&& block) {
  return at::parallel_reduce(
      0, n, kGrain, 0.0,
      [&](int64_t b, int64_t e, double acc) {
        for (int64_t i = b; i < e; i += kGrain) acc += block(i, std::min(e, i + kGrain) - i);
        return acc;
      },
      std::plus<double>());
}

}  // namespace

void FusedUpdate(const float* g, float* m, float* v, float* master, float* w, int64_t n, const AdamWStep& s) {
  // w == master: fp32 weights are the master copy itself.
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { UpdateFF(g + b, m + b, v + b, master + b, e - b, s); });
  if (w != master) std::memcpy(w, master, static_cast<size_t>(n) * sizeof(float));
}
void FusedUpdate(const float* g, float* m, float* v, float* master, uint16_t* w, int64_t n, const AdamWStep& s) {
  at::parallel_for(0, n, kGrain,
                   [&](int64_t b, int64_t e) { UpdateFB(g + b, m + b, v + b, master + b, w + b, e - b, s); });
}
void FusedUpdate(const uint16_t* g, float* m, float* v, float* master, float* w, int64_t n, const AdamWStep& s) {
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { UpdateBF(g + b, m + b, v + b, master + b, e - b, s); });
  if (w != master) std::memcpy(w, master, static_cast<size_t>(n) * sizeof(float));
}
void FusedUpdate(const uint16_t* g, float* m, float* v, float* master, uint16_t* w, int64_t n, const AdamWStep& s) {
  at::parallel_for(0, n, kGrain,
                   [&](int64_t b, int64_t e) { UpdateBB(g + b, m + b, v + b, master + b, w + b, e - b, s); });
}

double SumSquares(const float* x, int64_t n) {
  return ParallelSumSquares(n, [&](int64_t i, int64_t len) { return SumSquaresF(x + i, len); });
}
double SumSquares(const uint16_t* x, int64_t n) {
  return ParallelSumSquares(n, [&](int64_t i, int64_t len) { return SumSquaresB(x + i, len); });
}

}  // namespace topiary::train::internal
