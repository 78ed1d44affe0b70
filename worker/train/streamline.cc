#include "worker/train/streamline.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace topiary::train {
namespace {

// The residual stream entering block 0 .. `through` (inclusive), plus the
// stream leaving block `through`: L+1 points when through = L-1.
std::vector<at::Tensor> ResidualStreams(const model::LlamaModel& m, const at::Tensor& tokens, int64_t through) {
  torch::NoGradGuard no_grad;
  auto [cos32, sin32] = model::RopeTables(m.config, tokens.size(1));
  const at::ScalarType dt = m.dtype();
  const at::Tensor cos = cos32.to(dt), sin = sin32.to(dt);
  std::vector<at::Tensor> xs{at::embedding(m.embed_tokens, tokens)};
  for (int64_t l = 0; l <= through; ++l) xs.push_back(model::BlockForward(m, l, xs.back(), cos, sin));
  return xs;
}

absl::Status CheckWindow(const model::LlamaModel& m, int64_t first, int64_t n) {
  const int64_t L = m.config.num_hidden_layers;
  if (n < 1 || n >= L) return absl::InvalidArgumentError(absl::StrCat("drop: ", n, " blocks outside [1, ", L, ")"));
  if (first < 0 || first + n > L) {
    return absl::InvalidArgumentError(
        absl::StrCat("first: window [", first, ", ", first + n, ") outside the ", L, " blocks"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int64_t> BestReplacementWindow(const model::LlamaModel& m, const std::vector<data::Batch>& calibration,
                                              int64_t n) {
  RETURN_IF_ERROR(CheckWindow(m, 0, n));
  if (calibration.empty()) return absl::InvalidArgumentError("calibration: no batches");
  const int64_t L = m.config.num_hidden_layers;
  std::vector<double> cos_sum(L - n + 1, 0.0);
  for (const data::Batch& b : calibration) {
    std::vector<at::Tensor> xs = ResidualStreams(m, b.inputs, L - 1);
    for (int64_t l = 0; l + n <= L; ++l) {
      cos_sum[l] += at::cosine_similarity(xs[l].to(at::kFloat), xs[l + n].to(at::kFloat), -1).mean().item<double>();
    }
  }
  int64_t best = 0;
  for (int64_t l = 1; l + n <= L; ++l) {
    if (cos_sum[l] > cos_sum[best]) best = l;
  }
  return best;
}

absl::StatusOr<model::LlamaModel> ReplaceWindow(const model::LlamaModel& m, int64_t first, int64_t n) {
  RETURN_IF_ERROR(CheckWindow(m, first, n));
  if (!m.config.has_attention.empty() || !m.config.has_mlp.empty()) {
    return absl::InvalidArgumentError("model: blocks without attention or MLP cannot be replaced");
  }
  model::LlamaModel out = m;
  out.layers.clear();
  for (int64_t l = 0; l < first; ++l) out.layers.push_back(m.layers[l]);
  model::BlockWeights copy = m.layers[first];
  for (at::Tensor* t : {&copy.input_norm, &copy.q_proj, &copy.q_bias, &copy.k_proj, &copy.k_bias, &copy.v_proj,
                        &copy.v_bias, &copy.o_proj, &copy.o_bias, &copy.post_norm, &copy.gate_proj, &copy.gate_bias,
                        &copy.up_proj, &copy.up_bias, &copy.down_proj, &copy.down_bias}) {
    if (t->defined()) *t = t->detach().clone();
  }
  out.layers.push_back(copy);
  for (int64_t l = first + n; l < m.config.num_hidden_layers; ++l) out.layers.push_back(m.layers[l]);
  std::vector<int64_t> kept;  // the replacement block stands where `first` stood
  for (int64_t l = 0; l < m.config.num_hidden_layers; ++l) {
    if (l <= first || l >= first + n) kept.push_back(l);
  }
  out.config = model::KeepLayers(m.config, kept);
  return out;
}

Objective::Parts ReplacementObjective::ForwardBackward(const model::LlamaModel& student, const data::Batch& batch,
                                                       double grad_scale) {
  std::vector<at::Tensor> xs = ResidualStreams(*teacher_, batch.inputs, first_ + n_ - 1);
  auto [cos32, sin32] = model::RopeTables(student.config, batch.inputs.size(1));
  const at::ScalarType dt = student.dtype();
  at::Tensor y = model::BlockForward(student, first_, xs[first_], cos32.to(dt), sin32.to(dt));
  at::Tensor loss = HiddenStateLoss(y, xs[first_ + n_], HiddenLoss::kMse);
  (loss * grad_scale).backward();
  Parts p;
  p.loss = p.hidden = loss.item<double>();
  return p;
}

double ReplacementObjective::FlopsPerToken(const model::ModelConfig& student, int64_t seq_len) const {
  const model::ModelConfig& t = teacher_->config;
  const double head = 2.0 * static_cast<double>(t.vocab_size) * static_cast<double>(t.hidden_size);
  const double per_block = (ForwardFlopsPerToken(t, seq_len) - head) / static_cast<double>(t.num_hidden_layers);
  return per_block * static_cast<double>(first_ + n_) + 3 * per_block;
}

}  // namespace topiary::train
