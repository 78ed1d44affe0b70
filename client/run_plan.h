// `topiary run --dry-run`: the plan of a job on this machine, before
// anything starts (docs/design.md, "One machine"): each stage with its
// inputs, the target or candidate shapes with parameter counts and sizes,
// the memory each rank needs, and an estimate of its time from short steps
// measured now on a one- and two-block model of the real width (so a large
// teacher is never allocated whole). Blocking; uses every core for a few
// seconds.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "topiary/v1/job.pb.h"

namespace topiary::cli {

struct PlanOptions {
  int workers = 1;
  int slots_per_worker = 1;
  bool measure = true;  // time short steps for the estimates
};

struct Plan {
  std::string text;
  double seconds = 0;           // the estimated total
  double scalable_seconds = 0;  // the part that scales with token budgets (training, search probes)
};

// The plan; errors name the spec field (the teacher's config, a budget).
absl::StatusOr<Plan> PlanJob(const v1::JobSpec& spec, const PlanOptions& options);

// Multiplies every token budget of `spec` (the `tokens` of teacher
// correction, distillation and streamline stages, a search's
// `probe_tokens`) by `factor` in (0, 1], keeping at least one optimizer step
// of each; shapes and every other setting stay. Returns a line per budget
// changed ("stages[2].distill.tokens: 2M -> 560K").
std::vector<std::string> ScaleTokenBudgets(v1::JobSpec* spec, double factor);

}  // namespace topiary::cli
