#include "worker/compress/importance/depth_metric.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/compress/importance/metrics/metrics.h"

namespace topiary::compress {

const std::vector<DepthMetric>& DepthMetrics() {
  using S = DepthSource;
  static const std::vector<DepthMetric> k = {
      {"block_influence", S::kActivations, "1 - mean cos(X_i, X_i+1) (ShortGPT)", metrics::BlockInfluence},
      {"angular_distance", S::kActivations, "arccos(cos(x_l, x_l+1))/pi, last token (Gromov)",
       metrics::AngularDistance},
      {"relative_l1", S::kActivations, "mean |X_i+1 - X_i|_1 / |X_i|_1", metrics::RelativeL1},
      {"relative_l2", S::kActivations, "mean |X_i+1 - X_i|_2 / |X_i|_2", metrics::RelativeL2},
      {"attention_influence", S::kActivations, "1 - cos(X, X + Attn(Norm X))", metrics::AttentionInfluence},
      {"mlp_influence", S::kActivations, "1 - cos(X, X + MLP(Norm X))", metrics::MlpInfluence},
      {"lm_loss", S::kModel, "calibration LM loss without block i", metrics::LmLoss},
      {"perplexity", S::kModel, "calibration perplexity without block i", metrics::Perplexity},
      {"taylor", S::kModel, "sum |dL/dW * W| over the block", metrics::Taylor},
      {"magnitude_l1", S::kModel, "sum |W| over the block", metrics::MagnitudeL1},
      {"magnitude_l2", S::kModel, "|W|_2 over the block", metrics::MagnitudeL2},
      {"reverse_order", S::kModel, "L - i", metrics::ReverseOrder},
      {"random", S::kModel, "seeded uniform", metrics::Random},
  };
  return k;
}

absl::StatusOr<const DepthMetric*> FindDepthMetric(absl::string_view name) {
  std::vector<std::string> names;
  for (const DepthMetric& m : DepthMetrics()) {
    if (name == m.name) return &m;
    names.push_back(m.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("depth metric '", name, "': expected one of ", absl::StrJoin(names, ", ")));
}

}  // namespace topiary::compress
