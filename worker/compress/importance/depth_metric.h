// The registry of depth metrics (docs/design.md, "The algorithms"): one file per metric
// under metrics/, listed explicitly in depth_metric.cc (no static
// self-registration). Each maps the calibration context to one score per
// layer, higher = more important.
//
// Activation metrics read the statistics of the single observed forward pass
// (ActivationStats, already combined across ranks); model metrics run their
// own passes over this rank's calibration shard and combine across ranks
// through the communicator. Collective contract: every rank scores the same
// metrics in the same order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/compress/importance/activation_stats.h"
#include "worker/data/sampler.h"
#include "worker/dist/communicator.h"
#include "worker/model/llama.h"

namespace topiary::compress {

struct DepthContext {
  const model::LlamaModel* model = nullptr;
  const std::vector<data::Batch>* calibration = nullptr;  // this rank's shard
  const ActivationStats* stats = nullptr;                 // every rank's sums
  dist::Communicator* comm = nullptr;                     // never null
  uint64_t seed = 0;
};

enum class DepthSource { kActivations, kModel };

struct DepthMetric {
  const char* name;
  DepthSource source;
  const char* summary;
  absl::StatusOr<std::vector<double>> (*score)(const DepthContext&);
};

// Every depth metric, in a fixed order.
const std::vector<DepthMetric>& DepthMetrics();

// INVALID_ARGUMENT naming the metric and listing the known ones.
absl::StatusOr<const DepthMetric*> FindDepthMetric(absl::string_view name);

// Token-weighted mean cross-entropy of `model` over every rank's batches.
absl::StatusOr<double> CalibrationLoss(const model::LlamaModel& model, const std::vector<data::Batch>& batches,
                                       dist::Communicator& comm);

}  // namespace topiary::compress
