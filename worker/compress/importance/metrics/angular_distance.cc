// angular_distance (Gromov et al., arXiv:2403.17887): for n = 1, d_ℓ =
// arccos(cos(x_ℓ, x_{ℓ+1}))/π on the last token of each sequence, averaged.
// Windows of n > 1 blocks are in ImportanceResult::angular_windows and in
// scores.json (`angular_windows`), for contiguous pruning.
#include "worker/compress/importance/metrics/metrics.h"

namespace topiary::compress::metrics {

Result AngularDistance(const DepthContext& c) { return c.stats->AngularDistance()[0]; }

}  // namespace topiary::compress::metrics
