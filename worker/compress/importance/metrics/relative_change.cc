// relative_l1 / relative_l2 (Siddiqui et al., arXiv:2407.16286): the mean
// over tokens of ‖X_{i+1} − X_i‖ / ‖X_i‖ in the L1 or L2 norm.
#include "worker/compress/importance/metrics/metrics.h"

namespace topiary::compress::metrics {

Result RelativeL1(const DepthContext& c) { return c.stats->RelativeL1(); }
Result RelativeL2(const DepthContext& c) { return c.stats->RelativeL2(); }

}  // namespace topiary::compress::metrics
