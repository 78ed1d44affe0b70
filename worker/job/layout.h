// Where a job's files live on shared storage, and which earlier output each
// stage reads (docs/design.md, "Storage layout"):
//   <root>/jobs/<job>/<stage>/        a stage's complete output, renamed into
//                                     place whole; result.json inside is what
//                                     the stage reported
//   <root>/jobs/<job>/<search>/probe-<i>/  one search probe's output
//   <root>/jobs/<job>/.work/<stage>/  training checkpoints and logs that
//                                     survive a retry, and temporary outputs
// The model lineage: the teacher (or the teacher_correction stage's model),
// the newest importance scores, and the student made by the newest prune,
// search (the fan-in's probe), distill or streamline stage before this one.
// Torch-free; pure functions of the assignment.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "topiary/v1/worker_service.pb.h"

namespace topiary::job {

struct JobLayout {
  std::string job_dir;  // <root>/jobs/<job>
  std::string stage;    // this stage's name
  std::string output;   // <job_dir>/<stage>
  std::string work;     // <job_dir>/.work/<stage>

  std::string OutputOf(const std::string& stage_name) const { return job_dir + "/" + stage_name; }
};

absl::StatusOr<JobLayout> LayoutOf(const v1::Assignment& a);

struct Lineage {
  std::string teacher;   // the model every student is compared with and distilled from
  std::string original;  // spec.teacher.path
  std::string scores;    // scores.json of the newest importance stage ("" if none)
  std::string student;   // the newest model made by a stage ("" before any)
  // Every model so far, labelled: "teacher", "corrected teacher", "pruned", "distilled", ...
  std::vector<std::pair<std::string, std::string>> models;
  std::string Current() const { return student.empty() ? teacher : student; }
};

// INVALID_ARGUMENT when an earlier stage's result is missing or malformed
// (a search that chose no probe).
absl::StatusOr<Lineage> LineageOf(const v1::Assignment& a, const JobLayout& layout);

}  // namespace topiary::job
