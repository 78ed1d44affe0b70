#include "worker/compress/importance/model_metrics.h"

#include <torch/torch.h>

#include <random>

#include "absl/strings/str_cat.h"

namespace topiary::compress {
namespace {

using at::Tensor;

// The tensors of block l, through the model's own parameter table.
std::vector<Tensor*> BlockTensors(model::LlamaModel& m, int64_t l) {
  std::vector<Tensor*> out;
  const std::string prefix = absl::StrCat("model.layers.", l, ".");
  for (auto& [name, t] : m.NamedParameters()) {
    if (name.rfind(prefix, 0) == 0) out.push_back(t);
  }
  return out;
}

std::vector<double> LmLoss(const model::LlamaModel& m, const std::vector<data::Batch>& batches) {
  std::vector<double> out;
  for (int64_t l = 0; l < m.config.num_hidden_layers; ++l) {
    model::LlamaModel without = m;  // shares the weights
    without.layers.erase(without.layers.begin() + l);
    without.config.num_hidden_layers -= 1;
    auto erase_at = [l](std::vector<bool>& v) { if (!v.empty()) v.erase(v.begin() + l); };
    erase_at(without.config.has_attention);
    erase_at(without.config.has_mlp);
    out.push_back(CalibrationLoss(without, batches));
  }
  return out;
}

std::vector<double> Taylor(const model::LlamaModel& m0, const std::vector<data::Batch>& batches) {
  model::LlamaModel m = m0;
  std::vector<std::vector<Tensor*>> blocks;
  for (int64_t l = 0; l < m.config.num_hidden_layers; ++l) {
    blocks.push_back(BlockTensors(m, l));
    for (Tensor* t : blocks.back()) *t = t->detach().requires_grad_(true);
  }
  for (const data::Batch& b : batches) {
    Tensor logits = model::Forward(m, b.inputs).to(at::kFloat);
    at::cross_entropy_loss(logits.flatten(0, 1), b.targets.flatten()).backward();
  }
  std::vector<double> out;
  torch::NoGradGuard no_grad;
  for (auto& block : blocks) {
    double s = 0;
    for (Tensor* t : block) {
      if (t->grad().defined()) s += (t->grad().to(at::kFloat) * t->to(at::kFloat)).abs().sum().item<double>();
    }
    out.push_back(s);
  }
  return out;
}

std::vector<double> Magnitude(const model::LlamaModel& m0, bool l2) {
  model::LlamaModel m = m0;
  std::vector<double> out;
  for (int64_t l = 0; l < m.config.num_hidden_layers; ++l) {
    double s = 0;
    for (Tensor* t : BlockTensors(m, l)) {
      Tensor f = t->to(at::kFloat);
      s += l2 ? f.pow(2).sum().item<double>() : f.abs().sum().item<double>();
    }
    out.push_back(l2 ? std::sqrt(s) : s);
  }
  return out;
}

}  // namespace

double CalibrationLoss(const model::LlamaModel& m, const std::vector<data::Batch>& batches) {
  torch::NoGradGuard no_grad;
  double nll = 0, n = 0;
  for (const data::Batch& b : batches) {
    Tensor logits = model::Forward(m, b.inputs).to(at::kFloat);
    nll += at::cross_entropy_loss(logits.flatten(0, 1), b.targets.flatten(), {}, at::Reduction::Sum).item<double>();
    n += static_cast<double>(b.targets.numel());
  }
  return n > 0 ? nll / n : 0;
}

absl::StatusOr<std::vector<double>> ModelDepthScores(const std::string& metric, const model::LlamaModel& m,
                                                     const std::vector<data::Batch>& calibration, uint64_t seed) {
  const int64_t L = m.config.num_hidden_layers;
  if (metric == "lm_loss" || metric == "perplexity") return LmLoss(m, calibration);
  if (metric == "taylor") return Taylor(m, calibration);
  if (metric == "magnitude_l1" || metric == "magnitude") return Magnitude(m, false);
  if (metric == "magnitude_l2") return Magnitude(m, true);
  if (metric == "reverse_order") {
    std::vector<double> out;
    for (int64_t l = 0; l < L; ++l) out.push_back(static_cast<double>(L - l));
    return out;
  }
  if (metric == "random") {
    std::mt19937_64 rng(seed);
    std::vector<double> out;
    for (int64_t l = 0; l < L; ++l) out.push_back(static_cast<double>(rng() >> 11) / 9007199254740992.0);
    return out;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "depth metric '", metric, "': expected one of lm_loss, taylor, magnitude_l1, magnitude_l2, reverse_order, random, "
      "block_influence, relative_l1, relative_l2, angular_distance, attention_influence, mlp_influence"));
}

}  // namespace topiary::compress
