// Shape search under a parameter budget (docs/design.md, "Search"), two ways:
// - RunSearch ranks every candidate in one process by zero-shot held-out
//   loss (the local `topiary search`);
// - RunSearchProbe is one probe task of a job's search stage: it prunes the
//   teacher to candidate `index` of the same deterministic enumeration,
//   saves that pruned checkpoint, scores it zero-shot and, with probe
//   tokens, again after a short distillation from the teacher (Minitron's
//   ranking after light retraining). The coordinator fans in to the probe
//   with the lowest loss. Blocking.
#pragma once

#include <ATen/core/ScalarType.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/compress/search/search.h"
#include "worker/stages/context.h"
#include "worker/stages/data.h"
#include "worker/train/trainer.h"

namespace topiary::stages {

struct SearchStageOptions {
  std::string model, scores;
  std::string params;  // budget: a count ("6M") or a fraction of the model ("0.6")
  compress::SearchSpace space;
  DataOptions data;  // held-out data
  eval::EvalOptions eval;
  std::string out;  // optional: search.txt, search.json
};

struct SearchStageResult {
  model::ModelConfig original;
  std::vector<compress::Candidate> ranked;  // best first
  std::string table;
};

absl::StatusOr<SearchStageResult> RunSearch(const StageContext& context, const SearchStageOptions& options);

// "6M", "6000000" or a fraction of the original ("0.6").
absl::StatusOr<int64_t> ParseBudget(const std::string& text, int64_t total, absl::string_view field);

struct SearchProbeOptions {
  SearchStageOptions search;  // model, scores, budget, space, held-out data, eval
  int index = 0;              // which candidate
  int64_t probe_tokens = 0;   // 0: zero-shot only
  DataOptions train_data;     // for the probe's distillation
  train::TrainRecipe recipe;  // steps are set from probe_tokens
  at::ScalarType train_dtype = at::kBFloat16;
  at::ScalarType save_dtype = at::kBFloat16;
  std::string out;  // the pruned checkpoint goes to out/model
};

struct SearchProbeResult {
  bool skipped = false;  // the grid has fewer candidates than probes
  int candidates = 0;    // how many the grid has
  compress::Candidate candidate;
  double zero_shot_loss = 0;
  std::optional<double> distilled_loss;  // after probe_tokens of distillation
  int64_t probe_steps = 0;
  // What the fan-in compares: the distilled loss when there was a probe, else the zero-shot loss.
  double loss() const { return distilled_loss.value_or(zero_shot_loss); }
};

absl::StatusOr<SearchProbeResult> RunSearchProbe(const StageContext& context, const SearchProbeOptions& options);

}  // namespace topiary::stages
