// The gang scheduler and the coordinator's side of the worker protocol
// (docs/design.md, "Scheduling" and "The worker protocol"). Jobs run their
// stages in order; each stage is one task of R ranks (R = resources.ranks
// for importance, teacher correction, distillation and streamline; 1
// otherwise), each rank needing
// slots_per_rank slots on one worker. A task is placed whole or not at all,
// across workers by free slots; jobs are considered by priority, then age.
// A search stage fans out into one one-rank probe task per candidate, run in
// parallel where slots allow, and fans in to the probe with the lowest
// reported loss (the stage's result, passed to later stages' assignments).
// A task that cannot be placed reserves the free slots it would use, so
// later (smaller) tasks cannot starve it, and its job says why it waits.
//
// Workers register (persisted with the registering principal and a hash of
// a secret handed back once), heartbeat within a lease and long-poll for
// assignments; every later call must carry the worker's id and secret and
// come from the same principal. Assignments are re-sent until a heartbeat
// lists the rank as running (at least once; workers drop duplicates).
// Progress and completion name the attempt: another attempt's is
// FAILED_PRECONDITION (fencing), and a heartbeat listing a rank that is not
// (or no longer) the worker's gets it back in `stop`. A worker that misses
// its lease is lost: its tasks fail as infrastructure failures (not counted
// against max_retries, but at most kMaxInfraFailures times) and are retried
// after a backoff; a rank's own error is a task failure, retried until
// max_retries; a rank may report its own failure as infrastructure (a peer
// vanished, its worker is draining). Cancellation reaches running ranks
// through the next heartbeat or progress report. Every transition is a
// JobManager::Update: one durable batch with its events; each rank's
// completion (and rank 0's result) is durable before CompleteTask answers,
// while progress reports are written without fsync (they are superseded).
//
// Thread-safe. One mutex (mu_) guards workers and placements; leases live
// apart under lease_mu_, so that a heartbeat renews its lease even while a
// store write (an fsync) holds mu_ up. Lock order: mu_, then lease_mu_, then
// JobManager's locks; the scheduler's wake lock is taken alone.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "common/clock.h"
#include "server/jobs/job_manager.h"
#include "server/scheduler/rendezvous.h"
#include "server/store/store.h"
#include "topiary/v1/worker_service.pb.h"

namespace topiary::server {

struct SchedulerOptions {
  int64_t lease_micros = 10'000'000;
  // After a coordinator restart, registered workers get this long to come
  // back before they count as lost (0: three leases); their channels need a
  // reconnect first.
  int64_t recovery_grace_micros = 0;
  int64_t backoff_micros = 1'000'000;  // first retry delay, doubling per retry
  int64_t max_backoff_micros = 60'000'000;
  std::string storage_root;                    // stage outputs go to <root>/jobs/<job>/<stage>
  std::vector<std::string> storage_roots;      // every root, sent with assignments (workers check paths)
  int64_t redeliver_micros = 2'000'000;        // re-send an unacknowledged assignment after this long
  int64_t forget_lost_micros = 3'600'000'000;  // a lost worker is deleted this long after its lease ran out
};

// How long a heartbeat waits for the scheduler's lock before it answers with
// the renewed lease alone.
inline constexpr int kHeartbeatLockWaitMs = 200;

// A task that failed this often for reasons outside itself fails its job.
inline constexpr int kMaxInfraFailures = 20;

// Who is calling the worker API: the authenticated principal and the
// worker's credentials from the request.
struct WorkerCall {
  std::string principal;
  std::string worker_id;
  std::string secret;
};

class Scheduler {
 public:
  // `rendezvous` (may be null) loses a job's keys when the job ends.
  Scheduler(JobManager* jobs, Store* store, const Clock* clock, SchedulerOptions options,
            RendezvousStore* rendezvous = nullptr);
  ~Scheduler();

  // Start-up: registered workers get a fresh lease; active jobs are loaded.
  absl::Status Recover();
  // A background thread running passes on every change and every 100 ms.
  void Start();
  void Stop();
  // One pass: expire leases, finish cancellations, place what fits.
  void RunOnce();
  // Wakes the background pass (JobManager's listener).
  void Notify(const std::string& job_id);
  // Called (on the scheduler's thread, under its lock: it must only enqueue)
  // with the id of every job that has ended.
  void SetJobEndedListener(std::function<void(const std::string&)> listener) { ended_ = std::move(listener); }

  absl::StatusOr<v1::RegisterWorkerResponse> Register(const std::string& principal,
                                                      const v1::RegisterWorkerRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const WorkerCall& who, const v1::HeartbeatRequest& request);
  absl::StatusOr<std::vector<v1::Assignment>> Poll(const WorkerCall& who, int64_t wait_micros);
  // Returns whether the rank should stop (its job is being cancelled).
  absl::StatusOr<bool> Progress(const WorkerCall& who, const v1::ReportProgressRequest& request);
  absl::Status Complete(const WorkerCall& who, const v1::CompleteTaskRequest& request);
  // OK when `who` may use the rendezvous keys of this attempt of the task:
  // the attempt is the task's current one and a rank of it is on the worker.
  absl::Status CheckRendezvous(const WorkerCall& who, const std::string& task_id, int attempt);

  struct Stats {
    int workers_live = 0, workers_lost = 0;
    int slots_total = 0, slots_used = 0;
    std::vector<double> decision_seconds;                              // since the last TakeStats
    std::vector<std::pair<std::string, double>> stage_seconds;         // stage kind, duration; since the last TakeStats
    std::map<std::string, std::map<std::string, double>> job_metrics;  // running job -> name -> value
  };
  Stats TakeStats();

 private:
  struct Unacked {
    v1::Assignment assignment;
    int64_t last_sent = 0;  // monotonic micros; 0: never sent
  };
  struct Worker {
    v1::RegisterWorkerRequest info;
    std::string principal;
    std::string secret_sha256;
    int used = 0;
    bool live = true;                        // mirrors its Lease; changed under both locks
    bool draining = false;                   // says it is shutting down: nothing new goes there
    int64_t lost_wall = 0;                   // wall micros when it was declared lost
    std::map<std::string, Unacked> unacked;  // "task#rank" -> assignment not yet acknowledged
  };
  struct Rank {
    std::string worker;
    bool done = false;
  };
  struct Lease {
    std::string principal, secret_sha256;
    int64_t until = 0;  // monotonic micros
    bool live = true;
  };
  struct Placed {
    std::string job_id;
    int stage = 0;
    int task = 0;  // index within the stage
    int attempt = 0;
    std::string result_json;  // rank 0's result
    int slots_per_rank = 1;
    std::vector<Rank> ranks;
    bool cancelling = false;
    bool running = false;
  };

  v1::Assignment MakeAssignment(const v1::Job& job, int stage, const v1::Task& task, int rank) const;
  // The worker `who` names, if the secret and principal match.
  absl::StatusOr<Worker*> Authorize(const WorkerCall& who) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<v1::HeartbeatResponse> HeartbeatLocked(const WorkerCall& who, const v1::HeartbeatRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Renews `who`'s lease (checking its secret) under lease_mu_ alone.
  // NOT_FOUND for an unknown or lost worker.
  absl::Status RenewLease(const WorkerCall& who) ABSL_LOCKS_EXCLUDED(lease_mu_);
  // The placement of this attempt of a task with `rank` on `who`'s worker.
  absl::StatusOr<Placed*> PlacedRank(const WorkerCall& who, const std::string& task_id, int rank, int attempt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A task attempt ended: its unacknowledged assignments and rendezvous keys go.
  void EndAttempt(const std::string& task_id, const Placed& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records rank `rank`'s success durably; completes the task when it is the last.
  absl::Status CompleteRank(const std::string& task_id, int rank, const std::string& result_json)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PlaceJob(const v1::Job& job, int64_t now, std::map<std::string, int>& free, int& reserved)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool PlaceTask(const v1::Job& job, int stage, int index, int64_t now, std::map<std::string, int>& free, int& reserved,
                 std::string* reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireLeases(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) ABSL_LOCKS_EXCLUDED(lease_mu_);
  // Deletes workers lost longer than forget_lost_micros (and their records).
  void ForgetLostWorkers() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) ABSL_LOCKS_EXCLUDED(lease_mu_);
  absl::Status PersistWorker(const std::string& id, const Worker& w);
  void PlaceJobs(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailTask(const std::string& task_id, v1::FailureKind kind, const std::string& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishCancelled(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Release(Placed& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A job has ended: drop what the scheduler keeps for it.
  void Forget(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Wake() ABSL_LOCKS_EXCLUDED(wake_mu_);

  JobManager* jobs_;
  Store* store_;
  const Clock* clock_;
  SchedulerOptions options_;
  RendezvousStore* rendezvous_;
  std::function<void(const std::string&)> ended_;
  Mutex mu_;
  CondVar assigned_;  // a worker's outbox got work
  std::map<std::string, Worker> workers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Placed> placed_ ABSL_GUARDED_BY(mu_);       // task id -> placement
  std::map<std::string, int64_t> not_before_ ABSL_GUARDED_BY(mu_);  // task id -> earliest retry (monotonic micros)
  std::set<std::string> active_ ABSL_GUARDED_BY(mu_);               // jobs not finished
  std::vector<double> decisions_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, double>> stage_seconds_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, double>> job_metrics_ ABSL_GUARDED_BY(mu_);
  int64_t next_worker_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_pass_ ABSL_GUARDED_BY(mu_) = 0;  // monotonic micros of the previous RunOnce

  Mutex lease_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::map<std::string, Lease> leases_ ABSL_GUARDED_BY(lease_mu_);  // worker id -> its lease

  Mutex wake_mu_;
  CondVar wake_;
  bool dirty_ ABSL_GUARDED_BY(wake_mu_) = false;
  bool stop_ ABSL_GUARDED_BY(wake_mu_) = false;
  std::thread thread_;
};

}  // namespace topiary::server
