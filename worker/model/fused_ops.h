// Fused CPU operations of the Llama block, each one autograd node with a
// hand-written backward (kernels in fused_kernels.cc), for fp32 and bf16
// tensors; any other dtype takes the plain ATen expression. Against the
// unfused ATen chains they make one pass over memory instead of several and
// keep fewer activations: the scores-sized fp32 copies of attention, the
// silu(gate) tensor, the fp32 copy of the residual stream in RMSNorm.
//
// Numerics: every intermediate in fp32; a bf16 result is rounded once
// (RMSNorm keeps Hugging Face's rounding of the normalised value before the
// weight multiplies it). Tested against the unfused expressions in fp64.
#pragma once

#include <ATen/core/Tensor.h>

namespace topiary::model {

// scores (..., R·T, T) -> probabilities: row r is query q = r mod T (R
// query heads of one KV group may be stacked along time, R >= 1); softmax
// over keys 0..q of scale·scores, exactly 0 for keys after q.
at::Tensor CausalSoftmax(const at::Tensor& scores, double scale);

// silu(gate) · up, same shapes.
at::Tensor SwiGlu(const at::Tensor& gate, const at::Tensor& up);

// weight ⊙ (x / sqrt(mean(x², -1) + eps)), the normalised value rounded to
// x's dtype before the weight multiplies it. weight (C), x (..., C).
at::Tensor FusedRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// True when this CPU multiplies bf16 matrices natively. libtorch 1.13 sends
// a bf16 GEMM to oneDNN only where AVX-512 (BW, VL, DQ) exists; elsewhere it
// runs a reference loop 10-100x slower than fp32 (AMD Zen 2/3, most client
// CPUs). TOPIARY_BF16_GEMM=fp32 or =native overrides the detection.
bool NativeBf16Gemm();

// at::linear and at::matmul, except that bf16 operands on a CPU without a
// native bf16 GEMM are multiplied in fp32 and the result rounded to bf16:
// the same numbers as a bf16 GEMM with fp32 accumulation (the inputs widen
// exactly), at fp32 speed. `via_fp32` forces the route (for tests).
at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {});
at::Tensor MatMul(const at::Tensor& a, const at::Tensor& b);
at::Tensor LinearRouted(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, bool via_fp32);
at::Tensor MatMulRouted(const at::Tensor& a, const at::Tensor& b, bool via_fp32);

}  // namespace topiary::model
