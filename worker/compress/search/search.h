// Shape search under a parameter budget (docs/design.md, "The algorithms"; Minitron §3):
// enumerate isomorphic shapes on a grid (depth >= min_depth of the layers,
// each width >= min_width of the original, widths multiples of a divisor),
// keep those whose parameter count (analytic, CountParams) lies within
// ±tolerance of the budget, then rank them by zero-shot LM loss on held-out
// data after pruning with the saved importance scores. (The per-candidate
// distillation probe runs as fanned-out tasks of the service.) Blocking;
// thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/compress/prune/plan.h"
#include "worker/data/token_file.h"
#include "worker/eval/perplexity.h"

namespace topiary::compress {

struct SearchSpace {
  int64_t budget = 0;       // total parameters
  double tolerance = 0.05;  // keep |params - budget| <= tolerance * budget
  double min_depth = 0.8;   // fraction of the original layers
  double min_width = 0.6;   // fraction of each original width
  int64_t hidden_divisor = 32;
  int64_t ffn_divisor = 64;
  int64_t max_candidates = 24;  // the ones closest to the budget are evaluated
  std::string depth_metric = "block_influence";
};

struct Candidate {
  PruneTarget target;
  model::ModelConfig config;
  int64_t params = 0;  // analytic
  double loss = 0;     // zero-shot held-out LM loss after pruning
  double perplexity = 0;
};

// Checks the space against the model; errors name the field.
absl::Status ValidateSearchSpace(const model::ModelConfig& config, const SearchSpace& space);

// Every shape of the grid within the budget, closest to the budget first,
// at most max_candidates.
absl::StatusOr<std::vector<Candidate>> EnumerateCandidates(const model::ModelConfig& config, const SearchSpace& space);

// Prunes `model` to each candidate (in memory), checks the analytic count
// against the pruned tensors, evaluates; returns candidates best first.
absl::StatusOr<std::vector<Candidate>> RankCandidates(const model::LlamaModel& model, const Scores& scores,
                                                      std::vector<Candidate> candidates, const data::TokenFile& heldout,
                                                      const eval::EvalOptions& eval_options,
                                                      const std::string& depth_metric);

// The table: one header line and one line per candidate (rank, shape,
// params, share of the original, loss, perplexity).
std::string FormatTable(const model::ModelConfig& original, const std::vector<Candidate>& ranked);
// The same as JSON (an array of objects), for search.json.
std::string CandidatesToJson(const model::ModelConfig& original, const SearchSpace& space,
                             const std::vector<Candidate>& ranked);

}  // namespace topiary::compress
