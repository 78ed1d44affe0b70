// `topiary run --dry-run`: the plan of a job on this machine, before
// anything starts (docs/design.md, "One machine"): each stage with its
// inputs, the target or candidate shapes with parameter counts and sizes,
// the memory each rank needs, and an estimate of its time from short steps
// measured now on a one- and two-block model of the real width (so a large
// teacher is never allocated whole). Blocking; uses every core for a few
// seconds.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "topiary/v1/job.pb.h"

namespace topiary::cli {

struct PlanOptions {
  int workers = 1;
  int slots_per_worker = 1;
  bool measure = true;  // time short steps for the estimates
};

// The plan as text; errors name the spec field (the teacher's config, a budget).
absl::StatusOr<std::string> PlanJob(const v1::JobSpec& spec, const PlanOptions& options);

}  // namespace topiary::cli
