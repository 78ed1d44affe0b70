#include "worker/train/logit_loss_kernel.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "worker/model/vec_math.h"

// Built with -O3 -fno-math-errno (see CMakeLists.txt) so that the loops vectorise.
namespace topiary::train::internal {
namespace {

using kernels::ExpNonPositive;
using kernels::ExpSum;
using kernels::kLanes;
using kernels::Load;
using kernels::RowMax;
using kernels::Store;
using kernels::SumExp;

// et = e^{(t − mt)·k}; Σ et and Σ et (t − s)
template <typename T>
TOPIARY_KERNEL_INLINE void TeacherSums(const T* __restrict s, const T* __restrict t, int64_t n, float mt, float k,
                                       float* __restrict et, double* zt, double* at) {
  float z[kLanes] = {}, a[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float tv = Load(t[i + j]);
      const float e = ExpNonPositive((tv - mt) * k);
      et[i + j] = e;
      z[j] += e;
      a[j] += e > 0 ? e * (tv - Load(s[i + j])) : 0.0f;  // a teacher −inf adds nothing
    }
  }
  double zs = 0, as = 0;
  for (; i < n; ++i) {
    const float tv = Load(t[i]);
    const float e = ExpNonPositive((tv - mt) * k);
    et[i] = e;
    zs += e;
    as += e > 0 ? e * (tv - Load(s[i])) : 0.0f;
  }
  for (int j = 0; j < kLanes; ++j) zs += z[j], as += a[j];
  *zt = zs, *at = as;
}

struct RowOut {
  double kl = 0, ce = 0;
};

// es, et: scratch rows of V floats (the exponentials, reused by the gradient).
template <typename T, bool kTeacher>
TOPIARY_KERNEL_INLINE RowOut RowBody(const T* __restrict s, const T* __restrict t, int64_t V, int64_t target, float tau,
                                     T* __restrict g, float kl_coef, float ce_coef, float* __restrict es,
                                     float* __restrict et) {
  const float k = 1.0f / tau;
  const bool unit_tau = tau == 1.0f;
  const float ms = RowMax(s, V);
  const float mt = kTeacher ? RowMax(t, V) : 0.0f;
  const double zs = ExpSum(s, V, ms, k, es);
  const double z1 = unit_tau ? zs : SumExp(s, V, ms, 1.0f);
  RowOut out;
  if (target >= 0) out.ce = std::log(z1) + ms - Load(s[target]);
  double zt = 1, at = 0;
  if (kTeacher) {
    TeacherSums(s, t, V, mt, k, et, &zt, &at);
    // Σ p_t (log p_t − log p_s) = Σ p_t (t − s)/τ + (ms − mt)/τ − log Zt + log Zs
    out.kl = at / zt * k + static_cast<double>(ms - mt) * k - std::log(zt) + std::log(zs);
  }
  if (g == nullptr) return out;
  if (target < 0) ce_coef = 0;  // no target: no CE term in this row's gradient
  const float inv_zs = static_cast<float>(1 / zs), inv_z1 = static_cast<float>(1 / z1),
              inv_zt = static_cast<float>(1 / zt), kl_k = kl_coef * k;
  auto grad_at = [&](int64_t i) {
    const float ps = es[i] * inv_zs;
    const float p1 = unit_tau ? ps : ExpNonPositive(Load(s[i]) - ms) * inv_z1;
    float gi = ce_coef * p1;
    if (kTeacher) gi += kl_k * (ps - et[i] * inv_zt);
    return gi;
  };
  for (int64_t i = 0; i < V; ++i) Store(&g[i], grad_at(i));
  if (target >= 0) Store(&g[target], grad_at(target) - ce_coef);
  return out;
}

// One clone set per instantiation: target_clones does not apply to templates.
#define TOPIARY_ROWS(NAME, T, TEACHER)                                                                              \
  TOPIARY_KERNEL_CLONES void NAME(const LogitLossArgs& a, int64_t begin, int64_t end) {                             \
    const T* s = static_cast<const T*>(a.s);                                                                        \
    const T* t = static_cast<const T*>(a.t);                                                                        \
    T* g = static_cast<T*>(a.grad);                                                                                 \
    std::vector<float> es(static_cast<size_t>(a.vocab)), et(TEACHER ? static_cast<size_t>(a.vocab) : 0);            \
    for (int64_t r = begin; r < end; ++r) {                                                                         \
      const int64_t off = r * a.vocab;                                                                              \
      RowOut o = RowBody<T, TEACHER>(s + off, TEACHER ? t + off : nullptr, a.vocab, a.targets[r], a.tau,            \
                                     g != nullptr ? g + off : nullptr, a.kl_coef, a.ce_coef, es.data(), et.data()); \
      if (a.kl != nullptr) a.kl[r] = o.kl;                                                                          \
      if (a.ce != nullptr) a.ce[r] = o.ce;                                                                          \
    }                                                                                                               \
  }
TOPIARY_ROWS(RowsF, float, false)
TOPIARY_ROWS(RowsFT, float, true)
TOPIARY_ROWS(RowsB, uint16_t, false)
TOPIARY_ROWS(RowsBT, uint16_t, true)
#undef TOPIARY_ROWS

}  // namespace

void LogitLoss(const LogitLossArgs& a) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, a.vocab));
  at::parallel_for(0, a.rows, grain, [&](int64_t b, int64_t e) {
    if (a.bf16) {
      a.t != nullptr ? RowsBT(a, b, e) : RowsB(a, b, e);
    } else {
      a.t != nullptr ? RowsFT(a, b, e) : RowsF(a, b, e);
    }
  });
}

}  // namespace topiary::train::internal
