// Importance estimation over a calibration set (docs/design.md, "The algorithms"): one
// forward pass collects every activation-based statistic (ActivationStats);
// model-based depth metrics (depth_metric.h: lm_loss, taylor, magnitude, ...)
// run after it. The result is saved as a versioned scores.json (schema in
// scores_json.h) and reused for any target shape. Blocking.
//
// Distributed: every rank passes the same options and its communicator; the
// calibration batches are dealt round-robin (rank r takes batches r, r+W, ...),
// the statistics' sums are combined with one all-reduce, model metrics
// combine their own sums. Every rank returns the same result, equal to a
// single rank's within fp32 summation order.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/compress/importance/activation_stats.h"
#include "worker/compress/importance/scores.h"
#include "worker/data/sampler.h"
#include "worker/data/token_file.h"
#include "worker/dist/communicator.h"

namespace topiary::compress {

struct ImportanceOptions {
  Aggregation agg;
  MlpActivation mlp = MlpActivation::kDownProjInput;
  int64_t samples = 64;  // calibration sequences
  int64_t seq_len = 256;
  int64_t batch = 8;
  uint64_t seed = 0;
  // Depth metrics beyond the activation ones (always computed): any model
  // metric of DepthMetrics(), e.g. lm_loss, taylor, magnitude_l1, random.
  std::vector<std::string> extra_depth = {"lm_loss", "magnitude_l1", "reverse_order"};
};

struct ImportanceResult {
  Scores scores;
  std::vector<std::vector<double>> angular_windows;  // [n-1][start]
  at::Tensor channels_per_norm;                      // (2L+1, C)
  int64_t sequences = 0, tokens = 0;
};

// `comm` null means one rank.
absl::StatusOr<ImportanceResult> EstimateImportance(const model::LlamaModel& model, const data::TokenFile& file,
                                                    data::TokenRange range, const ImportanceOptions& options,
                                                    dist::Communicator* comm = nullptr);

// The calibration batches: `samples` sequences from the seeded sampler.
absl::StatusOr<std::vector<data::Batch>> CalibrationBatches(const data::TokenFile& file, data::TokenRange range,
                                                            const ImportanceOptions& options);

}  // namespace topiary::compress
