// Importance estimation over a calibration set (shared/DESIGN.md §6): one
// forward pass collects every activation-based statistic (ActivationStats);
// model-based depth metrics (lm_loss, taylor, magnitude, reverse_order,
// random) run after it. The result is saved as a versioned scores.json
// (schema in scores_json.h) and reused for any target shape. Blocking.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/compress/importance/activation_stats.h"
#include "worker/compress/prune/plan.h"
#include "worker/data/sampler.h"
#include "worker/data/token_file.h"

namespace topiary::compress {

struct ImportanceOptions {
  Aggregation agg;
  MlpActivation mlp = MlpActivation::kDownProjInput;
  int64_t samples = 64;   // calibration sequences
  int64_t seq_len = 256;
  int64_t batch = 8;
  uint64_t seed = 0;
  // Depth metrics beyond the activation ones (always computed):
  // lm_loss, taylor, magnitude_l1, magnitude_l2, reverse_order, random.
  std::vector<std::string> extra_depth = {"lm_loss", "magnitude_l1", "reverse_order"};
};

// Every depth metric name accepted by `extra_depth`, and the activation ones.
const std::vector<std::string>& ModelDepthMetrics();
const std::vector<std::string>& ActivationDepthMetrics();

struct ImportanceResult {
  Scores scores;
  std::vector<std::vector<double>> angular_windows;  // [n-1][start]
  at::Tensor channels_per_norm;                      // (2L+1, C)
  int64_t sequences = 0, tokens = 0;
};

absl::StatusOr<ImportanceResult> EstimateImportance(const model::LlamaModel& model, const data::TokenFile& file,
                                                    data::TokenRange range, const ImportanceOptions& options);

// The calibration batches: `samples` sequences from the seeded sampler.
absl::StatusOr<std::vector<data::Batch>> CalibrationBatches(const data::TokenFile& file, data::TokenRange range,
                                                            const ImportanceOptions& options);

}  // namespace topiary::compress
