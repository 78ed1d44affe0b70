// taylor (LLM-Pruner; Shortened LLaMA): Σ over block i's weights of
// |∂L/∂W ⊙ W|, the first-order estimate of the loss change when the block's
// weights are zeroed. Gradients of the calibration loss are summed over this
// rank's batches, then over ranks (one all-reduce per block) before the
// absolute value, so any sharding gives the same score.
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/compress/importance/metrics/metrics.h"

namespace topiary::compress::metrics {

std::vector<at::Tensor*> BlockTensors(model::LlamaModel& m, int64_t l) {
  std::vector<at::Tensor*> out;
  const std::string prefix = absl::StrCat("model.layers.", l, ".");
  for (auto& [name, t] : m.NamedParameters()) {
    if (name.rfind(prefix, 0) == 0) out.push_back(t);
  }
  return out;
}

Result Taylor(const DepthContext& c) {
  model::LlamaModel m = *c.model;  // shares storage; leaves are re-made below
  const int64_t L = m.config.num_hidden_layers;
  std::vector<std::vector<at::Tensor*>> blocks;
  for (int64_t l = 0; l < L; ++l) {
    blocks.push_back(BlockTensors(m, l));
    for (at::Tensor* t : blocks.back()) *t = t->detach().requires_grad_(true);
  }
  for (const data::Batch& b : *c.calibration) {
    at::Tensor logits = model::Forward(m, b.inputs).to(at::kFloat);  // (B, T, V)
    at::cross_entropy_loss(logits.flatten(0, 1), b.targets.flatten()).backward();
  }
  torch::NoGradGuard no_grad;
  std::vector<double> out;
  for (auto& block : blocks) {
    std::vector<at::Tensor> grads;
    for (at::Tensor* t : block) {
      grads.push_back(t->grad().defined() ? t->grad().to(at::kFloat).flatten() : at::zeros({t->numel()}));
    }
    at::Tensor g = at::cat(grads);  // the block's gradient, flat
    RETURN_IF_ERROR(c.comm->AllReduce(g));
    double s = 0;
    int64_t offset = 0;
    for (at::Tensor* t : block) {
      s += (g.narrow(0, offset, t->numel()) * t->to(at::kFloat).flatten()).abs().sum().item<double>();
      offset += t->numel();
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace topiary::compress::metrics
