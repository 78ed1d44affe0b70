// The job state machine as plain functions over a v1::Job record
// (docs/design.md, "Jobs"): each applies one transition and returns the
// events it makes; the caller stores the record and its events in one batch
// (JobManager::Update). No threads, no store, no clock: `wall` is the time to
// stamp. The scheduler decides *when* (placement, leases, messages from
// workers); these functions decide *what changes*.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "topiary/v1/job.pb.h"

namespace topiary::server::jobs {

// The first stage still to run; -1 when every stage is done.
int CurrentStage(const v1::Job& job);

// The task id of task `index` of `stage`: <job>/<stage>, or <job>/<stage>/probe-<index> in a search.
std::string TaskId(const v1::Job& job, int stage, int index);

struct Placement {
  int stage = 0;
  int task = 0;            // index within the stage
  int tasks_in_stage = 1;  // the stage's fan-out
  int ranks = 1;
  std::vector<std::string> workers;  // one per rank
};

// A task placed: the job RUNNING (if queued), its stage RUNNING (with its
// tasks made), the task ASSIGNED to its workers as the next attempt.
// FAILED_PRECONDITION when the job is neither QUEUED nor RUNNING (it was
// cancelled since the caller looked).
absl::StatusOr<std::vector<v1::Event>> PlaceTask(v1::Job& job, const Placement& p, int64_t wall);

// A rank reported: the task RUNNING on its first report, rank 0's progress recorded.
std::vector<v1::Event> ReportProgress(v1::Job& job, int stage, int task, bool first, const v1::Progress* progress);

struct RankDone {
  int stage = 0, task = 0, rank = 0;
  bool last = false;        // every other rank of the attempt is done
  std::string result_json;  // rank 0's
  std::string jobs_root;    // <storage root>/jobs, for the job's output path
};
struct RankDoneOutcome {
  bool cancelled = false;     // the job is being cancelled: nothing moved on
  bool job_finished = false;  // the job SUCCEEDED
  double stage_seconds = -1;  // a stage finished, this long
};
// A rank finished: recorded (durably, with rank 0's result); with the last
// rank the task SUCCEEDED, and with the last task its stage (a search fans
// in to its best probe) and with the last stage the job.
std::vector<v1::Event> CompleteRank(v1::Job& job, const RankDone& r, int64_t wall, RankDoneOutcome* out);

struct TaskFailure {
  int stage = 0, task = 0;
  v1::FailureKind kind = v1::FAILURE_TASK;
  std::string error;
  int max_infra_failures = 20;
  std::function<int64_t(int retry)> backoff_micros;  // for the event's message
};
struct TaskFailureOutcome {
  bool gave_up = false;  // the job FAILED
  int retry = 0;         // else: the attempt that failed (the next waits backoff_micros(retry))
};
// A task failed: retried (PENDING) unless its failures of that kind ran out,
// in which case its stage and the job FAILED and later stages CANCELLED.
std::vector<v1::Event> FailTask(v1::Job& job, const TaskFailure& f, int64_t wall, TaskFailureOutcome* out);

// A cancellation completed (no rank runs any more): the job CANCELLED with
// every unfinished stage and task.
std::vector<v1::Event> FinishCancel(v1::Job& job, int64_t wall);

// A search stage's fan-in: the probe with the lowest reported "loss".
struct FanInResult {
  std::string json;     // {"losses": [...], "best_task", "best_loss", "best": {...}}
  std::string message;  // "best: probe-4 (loss 3.1000)"
};
FanInResult FanIn(const v1::Stage& stage);

}  // namespace topiary::server::jobs
