// LoRA (Hu et al., arXiv:2106.09685) as a recovery after pruning: each
// targeted projection W (out, in) of every block gains a low-rank update,
//   W' = W + s·B·A,   A (r, in), B (out, r), s = alpha / r,
// with A drawn uniform(±1/√in) and B = 0, so training starts at the pruned
// model. The base weights stay frozen; only A and B train. The adapted model
// is materialised before each forward (W' is a graph node of A and B), so
// Forward stays the plain Llama forward; Merge folds the update into the
// weights for export: a plain checkpoint, no adapter format needed.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/llama.h"
#include "worker/train/objectives.h"

namespace topiary::train {

struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16;
  // Any of q, k, v, o, gate, up, down.
  std::vector<std::string> targets = {"q", "k", "v", "o", "gate", "up", "down"};
};

class LoraAdapter {
 public:
  // Errors name the field: rank, alpha, targets.
  static absl::StatusOr<std::unique_ptr<LoraAdapter>> Create(const model::LlamaModel& base, const LoraOptions& options,
                                                             uint64_t seed);

  // "lora.<layer>.<target>.A" / ".B", for the optimizer.
  NamedTensors Parameters();
  // A model sharing the base's untargeted weights, each target replaced by
  // W + s·B·A (differentiable in A and B when they require grad).
  model::LlamaModel Apply(const model::LlamaModel& base) const;
  // The same weights without autograd history: the model to export.
  model::LlamaModel Merge(const model::LlamaModel& base) const;
  double scale() const { return scale_; }
  int64_t ParameterCount() const;

 private:
  struct Factor {
    int64_t layer;
    at::Tensor model::BlockWeights::*member;
    std::string name;
    at::Tensor a, b;
  };
  LoraAdapter() = default;
  std::vector<Factor> factors_;
  double scale_ = 1;
};

// Wraps another objective: it sees the adapted model; the model is frozen.
class LoraObjective : public Objective {
 public:
  LoraObjective(Objective* inner, LoraAdapter* adapter) : inner_(inner), adapter_(adapter) {}
  Parts ForwardBackward(const model::LlamaModel& student, const data::Batch& batch, double grad_scale) override;
  NamedTensors Parameters() override;
  bool FreezesModel() const override { return true; }
  model::LlamaModel Effective(const model::LlamaModel& student) const override { return adapter_->Merge(student); }
  double FlopsPerToken(const model::ModelConfig& student, int64_t seq_len) const override {
    return inner_->FlopsPerToken(student, seq_len);
  }

 private:
  Objective* inner_;
  LoraAdapter* adapter_;
};

}  // namespace topiary::train
