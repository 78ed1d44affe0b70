// Internal: the fused AdamW update and the gradient sum of squares, shared by
// AdamW and ShardedAdamW. Vectorised loops compiled for AVX-512, AVX2 and
// baseline x86-64, chosen at load time (function multiversioning); threads
// through ATen's parallel_for. bf16 values are passed as their bits
// (uint16_t); a float weight pointer equal to `master` means "fp32 weights".
#pragma once

#include <cstdint>

namespace topiary::train::internal {

struct AdamWStep {
  float b1, b2;
  float lr_bc1;   // lr / (1 - b1^t)
  float inv_bc2;  // 1 / (1 - b2^t)
  float eps;
  float decay;  // 1 - lr * weight_decay, or 1 for tensors without decay
  float scale;  // multiplies the gradient (clipping)
};

// m = b1 m + (1-b1) g', v = b2 v + (1-b2) g'^2 with g' = scale g;
// master = decay master - lr_bc1 m / (sqrt(v inv_bc2) + eps); w = master
// (rounded to nearest even for bf16). Every array has n elements.
void FusedUpdate(const float* g, float* m, float* v, float* master, float* w, int64_t n, const AdamWStep& s);
void FusedUpdate(const float* g, float* m, float* v, float* master, uint16_t* w_bf16, int64_t n, const AdamWStep& s);
void FusedUpdate(const uint16_t* g_bf16, float* m, float* v, float* master, float* w, int64_t n, const AdamWStep& s);
void FusedUpdate(const uint16_t* g_bf16, float* m, float* v, float* master, uint16_t* w_bf16, int64_t n,
                 const AdamWStep& s);

// Σ x² in fp64 (fp32 partial sums over blocks of at most 16K elements).
double SumSquares(const float* x, int64_t n);
double SumSquares(const uint16_t* x_bf16, int64_t n);

}  // namespace topiary::train::internal
