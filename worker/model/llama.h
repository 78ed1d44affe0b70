// The Llama-family decoder (Llama 2/3, Mistral, Qwen2) in libtorch, written
// to read top to bottom: RMSNorm, rotary embeddings (rotate-half),
// grouped-query causal attention, SwiGLU MLP, final norm, lm_head.
//
// Forward holds no pruning, sharding or distillation logic. Code outside
// observes or replaces activations through an ActivationObserver at the named
// points below; with no observer Forward has no extra cost.
//
// Thread safety: a LlamaModel may be used by one thread at a time; Forward on
// distinct models is independent. Tensors are shared (refcounted), so a copy
// of LlamaModel aliases its weights.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "worker/model/config.h"

namespace topiary::model {

// Points in the forward pass where activations can be observed or replaced.
enum class Point {
  kBlockInput,     // residual stream entering block l         (B, T, C)
  kAttnNorm,       // input_layernorm output                    (B, T, C)
  kHeads,          // per-head attention output before o_proj  (B, T, NH, HS)
  kAttnResidual,   // residual after the attention sublayer     (B, T, C)
  kMlpNorm,        // post_attention_layernorm output           (B, T, C)
  kMlpGate,        // gate_proj output, before silu             (B, T, FF)
  kMlpActivation,  // silu(gate) * up, the input to down_proj   (B, T, FF)
  kBlockOutput,    // residual stream leaving block l           (B, T, C)
  kFinalNorm,      // final norm output (layer = -1)            (B, T, C)
};

// Receives activations during Forward. `x` may be replaced by a tensor of the
// same shape and dtype; the forward pass continues with the replacement.
class ActivationObserver {
 public:
  virtual ~ActivationObserver() = default;
  // Which points this observer wants; others are not reported.
  virtual bool Wants(Point point) const = 0;
  virtual void Observe(Point point, int64_t layer, at::Tensor& x) = 0;
};

struct BlockWeights {
  at::Tensor input_norm;            // (C)
  at::Tensor q_proj, q_bias;        // (NH*HS, C), (NH*HS) or undefined
  at::Tensor k_proj, k_bias;        // (G*HS, C),  (G*HS)
  at::Tensor v_proj, v_bias;        // (G*HS, C),  (G*HS)
  at::Tensor o_proj, o_bias;        // (C, NH*HS), (C)
  at::Tensor post_norm;             // (C)
  at::Tensor gate_proj, gate_bias;  // (FF, C), (FF)
  at::Tensor up_proj, up_bias;      // (FF, C), (FF)
  at::Tensor down_proj, down_bias;  // (C, FF), (C)
};

// A tensor of block l in checkpoint order: its name, shape and the
// BlockWeights member that holds it (what the config gives block l).
struct BlockParam {
  std::string name;
  std::vector<int64_t> shape;
  at::Tensor BlockWeights::*member;
};
std::vector<BlockParam> BlockParams(const ModelConfig& config, int64_t l);

struct LlamaModel {
  ModelConfig config;
  at::Tensor embed_tokens;           // (V, C)
  std::vector<BlockWeights> layers;  // L
  at::Tensor norm;                   // (C)
  at::Tensor lm_head;                // (V, C); the same tensor as embed_tokens when tied
  // The dtype Forward computes in. Undefined (the default): the weights'
  // dtype. Set wider than the weights (fp32 over a bf16 checkpoint used in
  // place from its mapped files), each weight is widened as it is used and
  // dropped after, so at most one matrix is held twice; lm_head is widened
  // in slices of rows.
  at::ScalarType compute_dtype = at::ScalarType::Undefined;

  // Every parameter with its Hugging Face name, in checkpoint order. When
  // tied, lm_head is not listed. The references point into this model.
  std::vector<std::pair<std::string, at::Tensor*>> NamedParameters();
  // The expected shape of every named parameter, from the config alone.
  static std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedShapes(const ModelConfig& config);

  // The scalar type of the weights as held (kFloat or kBFloat16).
  at::ScalarType dtype() const;
  // The scalar type Forward computes in: compute_dtype, or dtype().
  at::ScalarType ComputeDtype() const;
};

// A model with weights initialised as Hugging Face does (normal(0, std),
// norms 1, biases 0), deterministic for a seed.
LlamaModel InitModel(const ModelConfig& config, uint64_t seed, at::ScalarType dtype, double init_std = 0.02);

// Casts every weight to `dtype` (a no-op for weights already of that type).
void CastModel(LlamaModel& model, at::ScalarType dtype);

// Rotary tables for positions [offset, offset+T): cos and sin of shape
// (T, HS), in fp32, with the config's rope scaling applied.
std::pair<at::Tensor, at::Tensor> RopeTables(const ModelConfig& config, int64_t T, int64_t offset = 0);

struct ForwardOptions {
  ActivationObserver* observer = nullptr;
  bool return_hidden = false;  // return the final-norm output instead of logits
};

// tokens (B, T) int64 -> logits (B, T, V) in the weights' dtype.
at::Tensor Forward(const LlamaModel& model, const at::Tensor& tokens, const ForwardOptions& options = {});

// Block `layer` alone on the residual stream x (B, T, C), with rotary tables
// from RopeTables in the weights' dtype; observers see the block's points.
at::Tensor BlockForward(const LlamaModel& model, int64_t layer, const at::Tensor& x, const at::Tensor& cos,
                        const at::Tensor& sin, ActivationObserver* observer = nullptr);

// tokens (B, T) -> the residual stream entering block 0 (B, T, C), in the
// compute dtype.
at::Tensor Embed(const LlamaModel& model, const at::Tensor& tokens);

// The final norm of the residual stream leaving the last block (B, T, C).
at::Tensor FinalNorm(const LlamaModel& model, const at::Tensor& x);

// The logits of the final-norm hidden states (B, T, C) -> (B, T, V).
at::Tensor LmHead(const LlamaModel& model, const at::Tensor& hidden);

}  // namespace topiary::model
