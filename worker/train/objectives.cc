#include "worker/train/objectives.h"

#include <torch/torch.h>

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "worker/model/fused_ops.h"

namespace topiary::train {
namespace {

// Keeps the residual stream leaving the wanted blocks.
class BlockOutputs : public model::ActivationObserver {
 public:
  void Want(int64_t layer) { out_[layer] = at::Tensor(); }
  bool Wants(model::Point p) const override { return p == model::Point::kBlockOutput; }
  void Observe(model::Point, int64_t layer, at::Tensor& x) override {
    auto it = out_.find(layer);
    if (it != out_.end()) it->second = x;
  }
  const at::Tensor& at(int64_t layer) const { return out_.at(layer); }

 private:
  std::map<int64_t, at::Tensor> out_;
};

}  // namespace

double ForwardFlopsPerToken(const model::ModelConfig& c, int64_t seq_len) {
  const model::ParamCounts n = model::CountParams(c);
  const double multiplying =
      static_cast<double>(n.total() - n.embedding) + (c.tie_word_embeddings ? static_cast<double>(n.embedding) : 0.0);
  return 2.0 * multiplying + 4.0 * c.num_hidden_layers * seq_len * c.hidden_size;
}

double Objective::FlopsPerToken(const model::ModelConfig& student, int64_t seq_len) const {
  return 3 * ForwardFlopsPerToken(student, seq_len);
}

double ForwardBackwardCe(const model::LlamaModel& model, const data::Batch& batch, double grad_scale) {
  at::Tensor loss = CrossEntropy(model::Forward(model, batch.inputs), batch.targets);  // logits (B, T, V)
  (loss * grad_scale).backward();
  return loss.item<double>();
}

Objective::Parts CrossEntropyObjective::ForwardBackward(const model::LlamaModel& student, const data::Batch& batch,
                                                        double grad_scale) {
  Parts p;
  p.loss = p.ce = ForwardBackwardCe(student, batch, grad_scale);
  return p;
}

absl::StatusOr<std::unique_ptr<DistillationObjective>> DistillationObjective::Create(const model::LlamaModel* teacher,
                                                                                     const model::LlamaModel& student,
                                                                                     KdOptions kd,
                                                                                     HiddenStateOptions hidden) {
  if (teacher == nullptr) return absl::InvalidArgumentError("teacher: missing");
  if (teacher->config.vocab_size != student.config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("teacher: vocabulary ", teacher->config.vocab_size,
                                                   " differs from the student's ", student.config.vocab_size));
  }
  if (!(kd.temperature > 0)) return absl::InvalidArgumentError("temperature: must be positive");
  if (kd.ce_weight < 0) return absl::InvalidArgumentError("ce_weight: must be non-negative");
  if (!(kd.kl_weight >= 0)) return absl::InvalidArgumentError("kl_weight: must be non-negative");
  if (!hidden.pairs.empty() && !(hidden.weight > 0)) {
    return absl::InvalidArgumentError("hidden_weight: must be positive");
  }
  std::unique_ptr<DistillationObjective> o(new DistillationObjective);
  o->teacher_ = teacher;
  o->kd_ = kd;
  o->hidden_ = hidden;
  const int64_t Ls = student.config.num_hidden_layers, Lt = teacher->config.num_hidden_layers;
  const int64_t Cs = student.config.hidden_size, Ct = teacher->config.hidden_size;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(hidden.seed);
  for (size_t i = 0; i < hidden.pairs.size(); ++i) {
    const auto [s, t] = hidden.pairs[i];
    if (s < 0 || s >= Ls) {
      return absl::InvalidArgumentError(
          absl::StrCat("hidden_pairs[", i, "]: student block ", s, " outside [0, ", Ls, ")"));
    }
    if (t < 0 || t >= Lt) {
      return absl::InvalidArgumentError(
          absl::StrCat("hidden_pairs[", i, "]: teacher block ", t, " outside [0, ", Lt, ")"));
    }
    at::Tensor map;  // maps student channels to teacher channels
    if (Cs != Ct) {
      map = at::normal(0.0, 1.0 / std::sqrt(static_cast<double>(Cs)), {Ct, Cs}, gen,
                       at::TensorOptions().dtype(at::kFloat))
                .to(student.dtype());
    }
    o->maps_.push_back(map);
    o->map_names_.push_back(absl::StrCat("hidden_map.", i, ".weight"));
  }
  return o;
}

NamedTensors DistillationObjective::Parameters() {
  NamedTensors out;
  for (size_t i = 0; i < maps_.size(); ++i) {
    if (maps_[i].defined()) out.emplace_back(map_names_[i], &maps_[i]);
  }
  return out;
}

Objective::Parts DistillationObjective::ForwardBackward(const model::LlamaModel& student, const data::Batch& batch,
                                                        double grad_scale) {
  BlockOutputs teacher_blocks, student_blocks;
  for (const auto& [s, t] : hidden_.pairs) student_blocks.Want(s), teacher_blocks.Want(t);
  const bool hidden = !hidden_.pairs.empty();
  at::Tensor teacher_logits;
  {
    torch::NoGradGuard no_grad;
    model::ForwardOptions fo;
    if (hidden) fo.observer = &teacher_blocks;
    teacher_logits = model::Forward(*teacher_, batch.inputs, fo);  // (B, T, V)
  }
  model::ForwardOptions fo;
  if (hidden) fo.observer = &student_blocks;
  KdLoss kd = DistillationLoss(model::Forward(student, batch.inputs, fo), teacher_logits, batch.targets, kd_);
  Parts p{0, kd.kl, kd.ce, -1};
  at::Tensor loss = kd.loss;
  if (hidden) {
    at::Tensor h = at::zeros({}, at::kFloat);
    for (size_t i = 0; i < hidden_.pairs.size(); ++i) {
      at::Tensor s = student_blocks.at(hidden_.pairs[i].first);  // (B, T, Cs)
      if (maps_[i].defined()) s = model::Linear(s, maps_[i]);    // (B, T, Ct)
      h = h + HiddenStateLoss(s, teacher_blocks.at(hidden_.pairs[i].second), hidden_.loss);
    }
    h = h / static_cast<double>(hidden_.pairs.size());
    p.hidden = h.item<double>();
    loss = loss + h * hidden_.weight;
  }
  (loss * grad_scale).backward();
  p.loss = loss.item<double>();
  return p;
}

double DistillationObjective::FlopsPerToken(const model::ModelConfig& student, int64_t seq_len) const {
  return Objective::FlopsPerToken(student, seq_len) + ForwardFlopsPerToken(teacher_->config, seq_len);
}

}  // namespace topiary::train
