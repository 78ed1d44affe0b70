// Sublayer importance (What Matters in Transformers, arXiv:2406.15786):
// 1 − mean cos(X, X + Sublayer(Norm(X))) for the attention and the MLP
// sublayer of each block; drives drop_attention / drop_mlp.
#include "worker/compress/importance/metrics/metrics.h"

namespace topiary::compress::metrics {

Result AttentionInfluence(const DepthContext& c) { return c.stats->AttentionInfluence(); }
Result MlpInfluence(const DepthContext& c) { return c.stats->MlpInfluence(); }

}  // namespace topiary::compress::metrics
