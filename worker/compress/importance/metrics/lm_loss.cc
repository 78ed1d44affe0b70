// lm_loss / perplexity (Minitron; Shortened LLaMA, arXiv:2402.02834): the
// calibration LM loss (or its exp) with block i removed; one forward over the
// calibration shard per block, then one all-reduce of (nll, tokens) per
// block. Higher = removing the block hurts more = more important.
#include <torch/torch.h>

#include <cmath>

#include "common/status_macros.h"
#include "worker/compress/importance/metrics/metrics.h"

namespace topiary::compress {
namespace {

// (Σ nll, Σ tokens) of one model over one rank's batches.
std::pair<double, double> LossSums(const model::LlamaModel& m, const std::vector<data::Batch>& batches) {
  torch::NoGradGuard no_grad;
  double nll = 0, n = 0;
  for (const data::Batch& b : batches) {
    at::Tensor logits = model::Forward(m, b.inputs).to(at::kFloat);  // (B, T, V)
    nll += at::cross_entropy_loss(logits.flatten(0, 1), b.targets.flatten(), {}, at::Reduction::Sum).item<double>();
    n += static_cast<double>(b.targets.numel());
  }
  return {nll, n};
}

model::LlamaModel WithoutBlock(const model::LlamaModel& m, int64_t l) {
  model::LlamaModel without = m;  // shares the weights
  without.layers.erase(without.layers.begin() + l);
  without.config.num_hidden_layers -= 1;
  auto erase_at = [l](std::vector<bool>& v) {
    if (!v.empty()) v.erase(v.begin() + l);
  };
  erase_at(without.config.has_attention);
  erase_at(without.config.has_mlp);
  return without;
}

}  // namespace

absl::StatusOr<double> CalibrationLoss(const model::LlamaModel& m, const std::vector<data::Batch>& batches,
                                       dist::Communicator& comm) {
  auto [nll, n] = LossSums(m, batches);
  at::Tensor t = torch::tensor({nll, n}, at::kDouble);
  RETURN_IF_ERROR(comm.AllReduce(t));
  return t[1].item<double>() > 0 ? t[0].item<double>() / t[1].item<double>() : 0.0;
}

namespace metrics {

Result LmLoss(const DepthContext& c) {
  const int64_t L = c.model->config.num_hidden_layers;
  at::Tensor sums = at::zeros({L, 2}, at::kDouble);  // (L, [nll, tokens])
  for (int64_t l = 0; l < L; ++l) {
    auto [nll, n] = LossSums(WithoutBlock(*c.model, l), *c.calibration);
    sums[l][0] = nll;
    sums[l][1] = n;
  }
  RETURN_IF_ERROR(c.comm->AllReduce(sums));
  at::Tensor loss = sums.select(1, 0) / sums.select(1, 1).clamp_min(1);
  return std::vector<double>(loss.data_ptr<double>(), loss.data_ptr<double>() + L);
}

Result Perplexity(const DepthContext& c) {
  ASSIGN_OR_RETURN(std::vector<double> v, LmLoss(c));
  for (double& x : v) x = std::exp(x);
  return v;
}

}  // namespace metrics
}  // namespace topiary::compress
