// The importance stage: width and depth importance of a model on calibration
// data, written as scores.json with depth.svg and width.svg
// (docs/design.md, "Importance"). Every rank takes its share of the
// calibration batches; rank 0 writes the files. Blocking.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/compress/importance/estimate.h"
#include "worker/stages/context.h"
#include "worker/stages/data.h"

namespace topiary::stages {

struct ImportanceStageOptions {
  std::string model;  // Hugging Face directory
  DataOptions data;   // calibration data
  compress::ImportanceOptions importance;
  std::string out;  // directory for scores.json, depth.svg, width.svg (rank 0)
};

struct ImportanceStageResult {
  int64_t sequences = 0;
  int64_t tokens = 0;
  std::vector<std::string> depth_metrics;
  std::string scores_path;  // rank 0 only
};

absl::StatusOr<ImportanceStageResult> RunImportance(const StageContext& context, const ImportanceStageOptions& options);

}  // namespace topiary::stages
