#include "worker/model/fused_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "worker/model/vec_math.h"

// Built with -O3 -fno-math-errno (see CMakeLists.txt) so that the loops vectorise.
namespace topiary::kernels {
namespace {

// ---- causal softmax ----------------------------------------------------------

template <typename T>
TOPIARY_KERNEL_INLINE void SoftmaxRows(const T* __restrict x, T* __restrict y, int64_t begin, int64_t end, int64_t n,
                                       float scale) {
  std::vector<float> e(static_cast<size_t>(n));  // one row's exponentials, in cache
  for (int64_t r = begin; r < end; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    const int64_t valid = r % n + 1;  // keys 0..q
    const float m = RowMax(xr, valid);
    const float inv_z = static_cast<float>(1 / ExpSum(xr, valid, m, scale, e.data()));
    for (int64_t j = 0; j < valid; ++j) Store(&yr[j], e[j] * inv_z);
    for (int64_t j = valid; j < n; ++j) yr[j] = T(0);
  }
}

template <typename T>
TOPIARY_KERNEL_INLINE void SoftmaxBackwardRows(const T* __restrict g, const T* __restrict p, T* __restrict dx,
                                               int64_t begin, int64_t end, int64_t n, float scale) {
  for (int64_t r = begin; r < end; ++r) {
    const T* gr = g + r * n;
    const T* pr = p + r * n;
    T* dr = dx + r * n;
    const int64_t valid = r % n + 1;
    float acc[kLanes] = {};
    int64_t j = 0;
    for (; j + kLanes <= valid; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) acc[l] += Load(gr[j + l]) * Load(pr[j + l]);
    }
    float dot = 0;
    for (; j < valid; ++j) dot += Load(gr[j]) * Load(pr[j]);
    for (float a : acc) dot += a;
    for (j = 0; j < valid; ++j) Store(&dr[j], scale * Load(pr[j]) * (Load(gr[j]) - dot));
    for (j = valid; j < n; ++j) dr[j] = T(0);
  }
}

TOPIARY_KERNEL_CLONES void SoftmaxF(const float* x, float* y, int64_t b, int64_t e, int64_t n, float s) {
  SoftmaxRows(x, y, b, e, n, s);
}
TOPIARY_KERNEL_CLONES void SoftmaxB(const uint16_t* x, uint16_t* y, int64_t b, int64_t e, int64_t n, float s) {
  SoftmaxRows(x, y, b, e, n, s);
}
TOPIARY_KERNEL_CLONES void SoftmaxBackF(const float* g, const float* p, float* dx, int64_t b, int64_t e, int64_t n,
                                        float s) {
  SoftmaxBackwardRows(g, p, dx, b, e, n, s);
}
TOPIARY_KERNEL_CLONES void SoftmaxBackB(const uint16_t* g, const uint16_t* p, uint16_t* dx, int64_t b, int64_t e,
                                        int64_t n, float s) {
  SoftmaxBackwardRows(g, p, dx, b, e, n, s);
}

// ---- SwiGLU --------------------------------------------------------------------

// σ(x) without overflow: e = e^{−|x|} <= 1.
TOPIARY_KERNEL_INLINE float Sigmoid(float x) {
  const float e = ExpNonPositive(-std::fabs(x));
  const float inv = 1.0f / (1.0f + e);
  return x >= 0 ? inv : e * inv;
}

template <typename T>
TOPIARY_KERNEL_INLINE void SwiGluBody(const T* __restrict gate, const T* __restrict up, T* __restrict a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = Load(gate[i]);
    Store(&a[i], g * Sigmoid(g) * Load(up[i]));
  }
}

template <typename T>
TOPIARY_KERNEL_INLINE void SwiGluBackBody(const T* __restrict da, const T* __restrict gate, const T* __restrict up,
                                          T* __restrict dg, T* __restrict du, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = Load(gate[i]), d = Load(da[i]);
    const float s = Sigmoid(g);
    Store(&dg[i], d * Load(up[i]) * s * (1.0f + g * (1.0f - s)));
    Store(&du[i], d * g * s);
  }
}

TOPIARY_KERNEL_CLONES void SwiGluF(const float* g, const float* u, float* a, int64_t n) { SwiGluBody(g, u, a, n); }
TOPIARY_KERNEL_CLONES void SwiGluB(const uint16_t* g, const uint16_t* u, uint16_t* a, int64_t n) {
  SwiGluBody(g, u, a, n);
}
TOPIARY_KERNEL_CLONES void SwiGluBackF(const float* da, const float* g, const float* u, float* dg, float* du,
                                       int64_t n) {
  SwiGluBackBody(da, g, u, dg, du, n);
}
TOPIARY_KERNEL_CLONES void SwiGluBackB(const uint16_t* da, const uint16_t* g, const uint16_t* u, uint16_t* dg,
                                       uint16_t* du, int64_t n) {
  SwiGluBackBody(da, g, u, dg, du, n);
}

// ---- RMSNorm -------------------------------------------------------------------

// round(v) in the storage type: bf16 rounds, fp32 is exact.
TOPIARY_KERNEL_INLINE float Round(float v, float) { return v; }
TOPIARY_KERNEL_INLINE float Round(float v, uint16_t) { return Load(ToBf16(v)); }

template <typename T>
TOPIARY_KERNEL_INLINE void RmsNormRows(const T* __restrict x, const T* __restrict w, T* __restrict y,
                                       float* __restrict r, int64_t begin, int64_t end, int64_t C, float eps) {
  for (int64_t row = begin; row < end; ++row) {
    const T* xr = x + row * C;
    T* yr = y + row * C;
    float acc[kLanes] = {};
    int64_t j = 0;
    for (; j + kLanes <= C; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) acc[l] += Load(xr[j + l]) * Load(xr[j + l]);
    }
    float sq = 0;
    for (; j < C; ++j) sq += Load(xr[j]) * Load(xr[j]);
    for (float a : acc) sq += a;
    const float inv = 1.0f / std::sqrt(sq / static_cast<float>(C) + eps);
    r[row] = inv;
    for (j = 0; j < C; ++j) Store(&yr[j], Load(w[j]) * Round(Load(xr[j]) * inv, T()));
  }
}

template <typename T>
TOPIARY_KERNEL_INLINE void RmsNormBackRows(const T* __restrict dy, const T* __restrict x, const T* __restrict w,
                                           const float* __restrict r, T* __restrict dx, float* __restrict dw,
                                           int64_t begin, int64_t end, int64_t C) {
  for (int64_t row = begin; row < end; ++row) {
    const T* dyr = dy + row * C;
    const T* xr = x + row * C;
    T* dxr = dx + row * C;
    const float inv = r[row];
    float acc[kLanes] = {};
    int64_t j = 0;
    for (; j + kLanes <= C; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) acc[l] += Load(dyr[j + l]) * Load(w[j + l]) * Load(xr[j + l]);
    }
    float dot = 0;  // Σ dn ⊙ x (times inv below: Σ dn ⊙ n)
    for (; j < C; ++j) dot += Load(dyr[j]) * Load(w[j]) * Load(xr[j]);
    for (float a : acc) dot += a;
    const float k = dot * inv / static_cast<float>(C);  // mean(dn ⊙ n), as n = x · inv
    for (j = 0; j < C; ++j) {
      const float xv = Load(xr[j]), d = Load(dyr[j]);
      Store(&dxr[j], inv * (d * Load(w[j]) - xv * inv * k));
      dw[j] += d * Round(xv * inv, T());
    }
  }
}

TOPIARY_KERNEL_CLONES void RmsF(const float* x, const float* w, float* y, float* r, int64_t b, int64_t e, int64_t C,
                                float eps) {
  RmsNormRows(x, w, y, r, b, e, C, eps);
}
TOPIARY_KERNEL_CLONES void RmsB(const uint16_t* x, const uint16_t* w, uint16_t* y, float* r, int64_t b, int64_t e,
                                int64_t C, float eps) {
  RmsNormRows(x, w, y, r, b, e, C, eps);
}
TOPIARY_KERNEL_CLONES void RmsBackF(const float* dy, const float* x, const float* w, const float* r, float* dx,
                                    float* dw, int64_t b, int64_t e, int64_t C) {
  RmsNormBackRows(dy, x, w, r, dx, dw, b, e, C);
}
TOPIARY_KERNEL_CLONES void RmsBackB(const uint16_t* dy, const uint16_t* x, const uint16_t* w, const float* r,
                                    uint16_t* dx, float* dw, int64_t b, int64_t e, int64_t C) {
  RmsNormBackRows(dy, x, w, r, dx, dw, b, e, C);
}

template <typename T>
const T* In(const void* p) {
  return static_cast<const T*>(p);
}
template <typename T>
T* Out(void* p) {
  return static_cast<T*>(p);
}

int64_t RowGrain(int64_t row_len) { return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, row_len)); }

}  // namespace

void CausalSoftmaxForward(const void* x, void* y, bool bf16, int64_t rows, int64_t T, float scale) {
  at::parallel_for(0, rows, RowGrain(T), [&](int64_t b, int64_t e) {
    if (bf16)
      SoftmaxB(In<uint16_t>(x), Out<uint16_t>(y), b, e, T, scale);
    else
      SoftmaxF(In<float>(x), Out<float>(y), b, e, T, scale);
  });
}

void CausalSoftmaxBackward(const void* g, const void* p, void* dx, bool bf16, int64_t rows, int64_t T, float scale) {
  at::parallel_for(0, rows, RowGrain(T), [&](int64_t b, int64_t e) {
    if (bf16)
      SoftmaxBackB(In<uint16_t>(g), In<uint16_t>(p), Out<uint16_t>(dx), b, e, T, scale);
    else
      SoftmaxBackF(In<float>(g), In<float>(p), Out<float>(dx), b, e, T, scale);
  });
}

void SwiGluForward(const void* gate, const void* up, void* a, bool bf16, int64_t n) {
  at::parallel_for(0, n, 1 << 14, [&](int64_t b, int64_t e) {
    if (bf16)
      SwiGluB(In<uint16_t>(gate) + b, In<uint16_t>(up) + b, Out<uint16_t>(a) + b, e - b);
    else
      SwiGluF(In<float>(gate) + b, In<float>(up) + b, Out<float>(a) + b, e - b);
  });
}

void SwiGluBackward(const void* da, const void* gate, const void* up, void* d_gate, void* d_up, bool bf16, int64_t n) {
  at::parallel_for(0, n, 1 << 14, [&](int64_t b, int64_t e) {
    if (bf16) {
      SwiGluBackB(In<uint16_t>(da) + b, In<uint16_t>(gate) + b, In<uint16_t>(up) + b, Out<uint16_t>(d_gate) + b,
                  Out<uint16_t>(d_up) + b, e - b);
    } else {
      SwiGluBackF(In<float>(da) + b, In<float>(gate) + b, In<float>(up) + b, Out<float>(d_gate) + b,
                  Out<float>(d_up) + b, e - b);
    }
  });
}

void RmsNormForward(const void* x, const void* w, void* y, float* r, bool bf16, int64_t rows, int64_t C, float eps) {
  at::parallel_for(0, rows, RowGrain(C), [&](int64_t b, int64_t e) {
    if (bf16)
      RmsB(In<uint16_t>(x), In<uint16_t>(w), Out<uint16_t>(y), r, b, e, C, eps);
    else
      RmsF(In<float>(x), In<float>(w), Out<float>(y), r, b, e, C, eps);
  });
}

void RmsNormBackward(const void* dy, const void* x, const void* w, const float* r, void* dx, float* dw, bool bf16,
                     int64_t rows, int64_t C) {
  // dw sums over rows: a fixed split into kParts partial sums added in order,
  // so the result does not depend on the thread count or timing.
  constexpr int64_t kParts = 16;
  std::vector<float> partial(static_cast<size_t>(kParts * C), 0.0f);
  at::parallel_for(0, kParts, 1, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p) {
      const int64_t b = rows * p / kParts, e = rows * (p + 1) / kParts;
      float* dwp = partial.data() + p * C;
      if (bf16)
        RmsBackB(In<uint16_t>(dy), In<uint16_t>(x), In<uint16_t>(w), r, Out<uint16_t>(dx), dwp, b, e, C);
      else
        RmsBackF(In<float>(dy), In<float>(x), In<float>(w), r, Out<float>(dx), dwp, b, e, C);
    }
  });
  for (int64_t j = 0; j < C; ++j) dw[j] = 0;
  for (int64_t p = 0; p < kParts; ++p) {
    for (int64_t j = 0; j < C; ++j) dw[j] += partial[p * C + j];
  }
}

}  // namespace topiary::kernels
