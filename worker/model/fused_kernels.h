// Internal: the raw CPU loops behind fused_ops.h. Row-major contiguous
// buffers; T is float or bf16 bits (uint16_t); rows spread over ATen's
// threads; vectorised clones for AVX-512 / AVX2 / baseline x86-64.
#pragma once

#include <cstdint>

namespace topiary::kernels {

// scores/probs (rows, T) where rows = B·NH·T and row r is query r mod T:
// p_j = softmax_{j <= q}(scale · x_j), 0 above the diagonal.
void CausalSoftmaxForward(const void* x, void* y, bool bf16, int64_t rows, int64_t T, float scale);
// dx_j = scale · p_j (g_j − Σ_k g_k p_k) below the diagonal, 0 above.
void CausalSoftmaxBackward(const void* g, const void* p, void* dx, bool bf16, int64_t rows, int64_t T, float scale);

// a = silu(gate) · up over n elements.
void SwiGluForward(const void* gate, const void* up, void* a, bool bf16, int64_t n);
// d_gate = da · up · σ(g)(1 + g(1 − σ(g))), d_up = da · silu(g).
void SwiGluBackward(const void* da, const void* gate, const void* up, void* d_gate, void* d_up, bool bf16, int64_t n);

// y = w ⊙ round(x · r) per row of C, r = 1/sqrt(mean(x²) + eps) (stored, fp32).
void RmsNormForward(const void* x, const void* w, void* y, float* r, bool bf16, int64_t rows, int64_t C, float eps);
// dx = r (dn − n · mean(dn ⊙ n)) with n = x r, dn = dy ⊙ w; dw = Σ_rows dy ⊙ round(n) (fp32, C).
void RmsNormBackward(const void* dy, const void* x, const void* w, const float* r, void* dx, float* dw, bool bf16,
                     int64_t rows, int64_t C);

}  // namespace topiary::kernels
