// Internal: the scoring function of each depth metric, one file each. Only
// depth_metric.cc (the registry) includes this header.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "worker/compress/importance/depth_metric.h"

namespace topiary::compress::metrics {

using Result = absl::StatusOr<std::vector<double>>;

Result BlockInfluence(const DepthContext& c);      // block_influence.cc
Result AngularDistance(const DepthContext& c);     // angular_distance.cc
Result RelativeL1(const DepthContext& c);          // relative_change.cc
Result RelativeL2(const DepthContext& c);          // relative_change.cc
Result AttentionInfluence(const DepthContext& c);  // sublayer_influence.cc
Result MlpInfluence(const DepthContext& c);        // sublayer_influence.cc
Result LmLoss(const DepthContext& c);              // lm_loss.cc
Result Perplexity(const DepthContext& c);          // lm_loss.cc
Result Taylor(const DepthContext& c);              // taylor.cc
Result MagnitudeL1(const DepthContext& c);         // magnitude.cc
Result MagnitudeL2(const DepthContext& c);         // magnitude.cc
Result ReverseOrder(const DepthContext& c);        // reverse_order.cc
Result Random(const DepthContext& c);              // random.cc

// The tensors of block l, through the model's parameter table (magnitude, taylor).
std::vector<at::Tensor*> BlockTensors(model::LlamaModel& m, int64_t l);

}  // namespace topiary::compress::metrics
