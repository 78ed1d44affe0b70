// block_influence (ShortGPT, arXiv:2403.03853): BI_i = 1 − mean_{b,t}
// cos(X_i, X_{i+1}) over the residual stream entering and leaving block i.
// Low = the block barely changes the stream = removable.
#include "worker/compress/importance/metrics/metrics.h"

namespace topiary::compress::metrics {

Result BlockInfluence(const DepthContext& c) { return c.stats->BlockInfluence(); }

}  // namespace topiary::compress::metrics
