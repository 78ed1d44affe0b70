// LLM-Streamline's layer replacement (Chen et al., arXiv:2403.19135): remove
// n contiguous blocks [ℓ, ℓ+n) and put one block in their place, trained
// with MSE to map the residual stream entering the window, X_ℓ, to the one
// leaving it, X_{ℓ+n}, taken from the original model; the rest is frozen.
// The replacement is an ordinary decoder block initialised from block ℓ, so
// the result stays a plain Llama model with n−1 fewer layers (isomorphic:
// any Llama runtime loads it). The window, when not given, is the paper's
//   ℓ*(n) = argmax_ℓ mean_tokens cos(X_ℓ, X_{ℓ+n})
// on calibration batches.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/sampler.h"
#include "worker/model/llama.h"
#include "worker/train/objectives.h"

namespace topiary::train {

// The first block of the n-block window whose input and output agree most
// (mean cosine over tokens); errors when n is outside [1, L).
absl::StatusOr<int64_t> BestReplacementWindow(const model::LlamaModel& model,
                                              const std::vector<data::Batch>& calibration, int64_t n);

// Blocks [0, first) + a copy of block `first` + blocks [first+n, L): the
// student before training. Shares the kept blocks' tensors with `model`;
// the replacement block's tensors are fresh copies.
absl::StatusOr<model::LlamaModel> ReplaceWindow(const model::LlamaModel& model, int64_t first, int64_t n);

// The objective: MSE between the student's block `first` applied to the
// teacher's X_first and the teacher's X_{first+n}. Train it with
// RunOptions::train_blocks = {first}.
class ReplacementObjective : public Objective {
 public:
  ReplacementObjective(const model::LlamaModel* teacher, int64_t first, int64_t n)
      : teacher_(teacher), first_(first), n_(n) {}
  Parts ForwardBackward(const model::LlamaModel& student, const data::Batch& batch, double grad_scale) override;
  double FlopsPerToken(const model::ModelConfig& student, int64_t seq_len) const override;

 private:
  const model::LlamaModel* teacher_;
  int64_t first_, n_;
};

}  // namespace topiary::train
