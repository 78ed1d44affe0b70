// The prune stage: a checkpoint pruned to a target shape with importance
// scores, streamed tensor by tensor (docs/design.md, "Pruning"). Blocking.
#pragma once

#include <ATen/core/ScalarType.h>

#include <string>

#include "absl/status/statusor.h"
#include "worker/compress/prune/plan.h"
#include "worker/model/config.h"
#include "worker/stages/context.h"

namespace topiary::stages {

struct PruneStageOptions {
  std::string model;   // the source checkpoint
  std::string scores;  // scores.json (may be empty for explicit drop lists only)
  compress::PruneTarget target;
  at::ScalarType dtype = at::kBFloat16;  // output dtype
  std::string out;                       // output checkpoint directory
  bool durable = true;                   // fsync every file before it is renamed into place
};

struct PruneStageResult {
  model::ModelConfig config;  // the pruned shape
  model::ParamCounts before, after;
  int64_t peak_rss_bytes = 0;
};

absl::StatusOr<PruneStageResult> RunPrune(const StageContext& context, const PruneStageOptions& options);

// Reads and checks scores.json against `config` (empty path: no scores).
absl::StatusOr<compress::Scores> LoadScores(const std::string& path, const model::ModelConfig& config);

}  // namespace topiary::stages
