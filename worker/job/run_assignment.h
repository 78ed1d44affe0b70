// One rank of one task of a job, run to completion in the rank process
// (docs/design.md, "Stages"): the assignment's stage is turned into the
// stage's options (spec_options.h), its inputs found by the storage layout
// (layout.h), every path checked against the storage roots, its memory need
// checked against this rank's budget, and its output written to a temporary
// directory renamed into place whole with result.json inside. A stage whose
// output already exists (a previous attempt finished it but its completion
// was not acknowledged) reports that result again without redoing the work;
// training resumes from the newest checkpoint of earlier attempts. Blocking.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "topiary/v1/worker_service.pb.h"
#include "worker/stages/context.h"

namespace topiary::job {

struct RankEnv {
  std::vector<std::string> storage_roots;  // every path opened must resolve under one
  int64_t memory_budget = -1;              // bytes this rank may use (-1: unchecked)
  std::string device = "cpu";
};

// What rank 0 reports as the task's result (other ranks report {}).
absl::StatusOr<nlohmann::json> RunAssignment(const v1::Assignment& assignment, const RankEnv& env,
                                             const stages::StageContext& context);

}  // namespace topiary::job
