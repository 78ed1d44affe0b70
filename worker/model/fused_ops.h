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

}  // namespace topiary::model
