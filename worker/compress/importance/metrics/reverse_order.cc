// reverse_order (Reassessing Layer Pruning, arXiv:2411.15558): score L − i,
// so the last blocks are pruned first. A strong data-free baseline.
#include "worker/compress/importance/metrics/metrics.h"

namespace topiary::compress::metrics {

Result ReverseOrder(const DepthContext& c) {
  const int64_t L = c.model->config.num_hidden_layers;
  std::vector<double> out;
  for (int64_t l = 0; l < L; ++l) out.push_back(static_cast<double>(L - l));
  return out;
}

}  // namespace topiary::compress::metrics
