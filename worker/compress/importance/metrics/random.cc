// random: seeded uniform scores in [0, 1), the baseline every metric must
// beat. The same seed gives the same scores on every rank and every run.
#include <random>

#include "worker/compress/importance/metrics/metrics.h"

namespace topiary::compress::metrics {

Result Random(const DepthContext& c) {
  std::mt19937_64 rng(c.seed);
  std::vector<double> out;
  for (int64_t l = 0; l < c.model->config.num_hidden_layers; ++l) {
    out.push_back(static_cast<double>(rng() >> 11) / 9007199254740992.0);  // 53 random bits
  }
  return out;
}

}  // namespace topiary::compress::metrics
