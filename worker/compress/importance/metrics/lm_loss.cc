// lm_loss / perplexity (Minitron; Shortened LLaMA, arXiv:2402.02834): the
// calibration LM loss (or its exp) with block i removed, then one
// all-reduce of (nll, tokens) per block. Higher = removing the block hurts
// more = more important. The runs without each block share their prefix:
// for each batch the residual stream is carried through blocks 0..i-1 once,
// and the run without block i continues from it at block i+1, so a model of
// L blocks costs L(L+1)/2 block forwards per batch instead of L(L-1).
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

double Nll(const model::LlamaModel& m, const at::Tensor& x, const data::Batch& b) {
  at::Tensor logits = model::LmHead(m, model::FinalNorm(m, x)).to(at::kFloat);  // (B, T, V)
  return at::cross_entropy_loss(logits.flatten(0, 1), b.targets.flatten(), {}, at::Reduction::Sum).item<double>();
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
  const model::LlamaModel& m = *c.model;
  const int64_t L = m.config.num_hidden_layers;
  at::Tensor sums = at::zeros({L, 2}, at::kDouble);  // (L, [nll, tokens])
  torch::NoGradGuard no_grad;
  for (const data::Batch& b : *c.calibration) {
    const int64_t T = b.inputs.size(1);
    auto [cos32, sin32] = model::RopeTables(m.config, T);
    const at::Tensor cos = cos32.to(m.ComputeDtype()), sin = sin32.to(m.ComputeDtype());
    at::Tensor prefix = model::Embed(m, b.inputs);  // entering block l
    for (int64_t l = 0; l < L; ++l) {
      at::Tensor x = prefix;
      for (int64_t k = l + 1; k < L; ++k) x = model::BlockForward(m, k, x, cos, sin);
      sums[l][0] += Nll(m, x, b);
      sums[l][1] += static_cast<double>(b.targets.numel());
      if (l + 1 < L) prefix = model::BlockForward(m, l, prefix, cos, sin);
    }
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
