// magnitude_l1 / magnitude_l2: Σ|W| or ‖W‖₂ over every weight of block i.
// Data-free; the same on every rank.
#include <cmath>

#include "worker/compress/importance/metrics/metrics.h"

namespace topiary::compress::metrics {
namespace {

std::vector<double> Magnitude(const model::LlamaModel& m0, bool l2) {
  model::LlamaModel m = m0;
  std::vector<double> out;
  for (int64_t l = 0; l < m.config.num_hidden_layers; ++l) {
    double s = 0;
    for (at::Tensor* t : BlockTensors(m, l)) {
      // In slices of 1M values: a widened copy of a whole matrix would be 4x the bf16 model's largest tensor.
      for (const at::Tensor& part : t->flatten().split(int64_t{1} << 20)) {
        at::Tensor f = part.to(at::kDouble);
        s += l2 ? f.pow(2).sum().item<double>() : f.abs().sum().item<double>();
      }
    }
    out.push_back(l2 ? std::sqrt(s) : s);
  }
  return out;
}

}  // namespace

Result MagnitudeL1(const DepthContext& c) { return Magnitude(*c.model, false); }
Result MagnitudeL2(const DepthContext& c) { return Magnitude(*c.model, true); }

}  // namespace topiary::compress::metrics
