// One forward pass over the calibration set collects every activation-based
// importance statistic (docs/design.md, "The algorithms"):
//   width: attention heads (‖A_h‖₂ over HS), MLP neurons (|silu(gate)·up| or
//          |gate|), embedding channels (|RMSNorm output|, every norm);
//   depth: block influence, relative L1/L2 change, angular distance of every
//          window of n blocks (last token), attention/MLP sublayer influence.
// Accumulates in fp32 with memory independent of the number of samples; the
// state packs into one tensor so that ranks combine it with one all-reduce.
// Thread-compatible: one forward pass at a time.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "worker/compress/importance/aggregate.h"
#include "worker/model/llama.h"

namespace topiary::compress {

enum class MlpActivation { kDownProjInput, kGateOutput };

class ActivationStats : public model::ActivationObserver {
 public:
  ActivationStats(const model::ModelConfig& config, Aggregation agg, MlpActivation mlp);

  bool Wants(model::Point point) const override;
  void Observe(model::Point point, int64_t layer, at::Tensor& x) override;

  // All statistics as one fp32 tensor (sums only: adding two packs combines
  // two shards), and back.
  at::Tensor Packed() const;
  void SetPacked(const at::Tensor& packed);

  // Width scores.
  at::Tensor HeadScores() const;            // (L, NH)
  at::Tensor KvGroupScores() const;         // (L, G): L2 over the group's query heads
  at::Tensor NeuronScores() const;          // (L, FF)
  at::Tensor ChannelScores() const;         // (C): summed over every norm
  at::Tensor ChannelScoresPerNorm() const;  // (2L+1, C)

  // Depth scores, one per layer (higher = more important).
  std::vector<double> BlockInfluence() const;  // 1 - mean cos(X_i, X_{i+1})
  std::vector<double> RelativeL1() const;      // mean ‖X_{i+1}-X_i‖₁/‖X_i‖₁
  std::vector<double> RelativeL2() const;
  std::vector<double> AttentionInfluence() const;  // 1 - mean cos(X, X + Attn(Norm(X)))
  std::vector<double> MlpInfluence() const;
  // Angular distance arccos(cos(x_l, x_{l+n}))/π on the last token, averaged;
  // entry [n-1][l] for windows of n blocks starting at l (l + n <= L).
  std::vector<std::vector<double>> AngularDistance() const;

  int64_t sequences() const { return static_cast<int64_t>(sequences_); }

 private:
  static at::Tensor CosPerToken(const at::Tensor& a, const at::Tensor& b);  // (B, T)
  void AddDepth(int64_t layer, const at::Tensor& in, const at::Tensor& out);

  model::ModelConfig config_;
  Aggregation agg_;
  MlpActivation mlp_;
  std::vector<UnitStats> heads_, neurons_, norms_;  // norms_: 2L+1 (input, post per layer; final)
  // Depth sums over tokens: cos(in,out), rel L1, rel L2, attn cos, mlp cos.
  at::Tensor block_cos_, rel_l1_, rel_l2_, attn_cos_, mlp_cos_;  // (L) fp64
  at::Tensor angular_;                                           // (L, L+1): sum over sequences for windows [l, l+n)
  std::vector<at::Tensor> last_token_;                           // per layer input, then the final output: (B, C)
  at::Tensor block_input_, attn_residual_;
  double tokens_ = 0, sequences_ = 0;
};

}  // namespace topiary::compress
