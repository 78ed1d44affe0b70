// What a training run minimises (docs/design.md, "The algorithms"). An Objective turns one
// micro batch into a loss, runs backward, and reports the loss parts; it may
// own trainable tensors of its own (a hidden-state map, LoRA factors) that
// the optimizer trains next to the model's.
//
//   CrossEntropyObjective   next-token CE: training, teacher correction.
//   DistillationObjective   Minitron's KD: forward KL on logits at τ, plus
//                           α·CE, plus an optional hidden-state loss between
//                           chosen (student, teacher) block outputs through a
//                           learned linear map when the widths differ.
// LoRA (lora.h) and LLM-Streamline's block replacement (streamline.h) are
// objectives too.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/sampler.h"
#include "worker/model/llama.h"
#include "worker/train/losses.h"

namespace topiary::train {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor*>>;

class Objective {
 public:
  struct Parts {
    double loss = 0;
    double kl = -1;      // KD's KL term (-1: none)
    double ce = 0;       // the student's CE on the targets
    double hidden = -1;  // the hidden-state term (-1: none)
  };
  virtual ~Objective() = default;
  // Accumulates the gradient of grad_scale · loss into .grad() of every
  // trainable tensor and returns the loss parts.
  virtual Parts ForwardBackward(const model::LlamaModel& student, const data::Batch& batch, double grad_scale) = 0;
  // Trainable tensors owned by the objective (names unique, not the model's).
  virtual NamedTensors Parameters() { return {}; }
  // True when the model's own weights stay frozen (only Parameters() train).
  virtual bool FreezesModel() const { return false; }
  // The model the objective's loss sees, for evaluation (LoRA: merged).
  virtual model::LlamaModel Effective(const model::LlamaModel& student) const { return student; }
  // FLOPs per token of one training micro batch (forward + backward and any
  // teacher forward), for MFU; the default is a full training step, 3·F.
  virtual double FlopsPerToken(const model::ModelConfig& student, int64_t seq_len) const;
};

class CrossEntropyObjective : public Objective {
 public:
  Parts ForwardBackward(const model::LlamaModel& student, const data::Batch& batch, double grad_scale) override;
};

// Hidden-state distillation between block outputs (the residual stream
// leaving block s of the student and block t of the teacher).
struct HiddenStateOptions {
  std::vector<std::pair<int64_t, int64_t>> pairs;  // (student block, teacher block)
  HiddenLoss loss = HiddenLoss::kCosine;
  double weight = 1.0;
  uint64_t seed = 0;  // initialisation of the linear maps
};

class DistillationObjective : public Objective {
 public:
  // The teacher must share the student's vocabulary; pairs must name blocks
  // of each model. Errors name the field.
  static absl::StatusOr<std::unique_ptr<DistillationObjective>> Create(const model::LlamaModel* teacher,
                                                                       const model::LlamaModel& student, KdOptions kd,
                                                                       HiddenStateOptions hidden = {});
  Parts ForwardBackward(const model::LlamaModel& student, const data::Batch& batch, double grad_scale) override;
  NamedTensors Parameters() override;
  double FlopsPerToken(const model::ModelConfig& student, int64_t seq_len) const override;

 private:
  DistillationObjective() = default;
  const model::LlamaModel* teacher_ = nullptr;
  KdOptions kd_;
  HiddenStateOptions hidden_;
  std::vector<at::Tensor> maps_;  // per pair: (C_teacher, C_student), undefined when the widths agree
  std::vector<std::string> map_names_;
};

// Forward FLOPs per token of a model (docs/design.md, "How speed is judged"): 2N + 4·L·T·C,
// N the parameters that multiply (all but the embedding lookup).
double ForwardFlopsPerToken(const model::ModelConfig& config, int64_t seq_len);

// One micro batch of cross-entropy: forward, backward of loss · grad_scale.
double ForwardBackwardCe(const model::LlamaModel& model, const data::Batch& batch, double grad_scale);

}  // namespace topiary::train
