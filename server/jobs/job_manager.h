// The job state machine of the coordinator (docs/design.md, "Jobs" and "The coordinator"), with
// no knowledge of gRPC: create (validated, idempotent), read, list, cancel,
// delete, watch events and the final report. Every transition writes the
// job and its events in one store batch before it returns; watchers wake on
// every new event. Owners: a user sees and changes only their own jobs
// (another user's job is NOT_FOUND); an admin sees all.
//
// Thread-safe. Transitions of one job are serialised by that job's lock (one
// of kJobLockStripes, chosen by id), so the store write of one job's
// transition (an fsync) never holds up reads, lists, creates, watches or
// another job's transitions; the manager's own mutex guards only counters and
// watchers and is never held across a store write. Lock order: job stripe,
// then mu_.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "common/clock.h"
#include "common/spec/validate.h"
#include "server/store/store.h"
#include "topiary/v1/job_service.pb.h"

namespace topiary::server {

struct Principal {
  enum class Role { kUser, kAdmin, kWorker };
  std::string name;
  Role role = Role::kUser;
};

struct JobManagerOptions {
  std::vector<std::string> storage_roots;
  std::string jobs_root;  // <storage root>/jobs: where a job's stages and report live
  spec::Limits limits;
  int64_t max_queued = 10000;          // CreateJob answers RESOURCE_EXHAUSTED beyond it
  int max_watches_per_user = 64;       // open WatchJob streams per principal
  int max_watches = 1024;              // open WatchJob streams in all
  size_t max_list_bytes = 4 << 20;     // a ListJobs page stops here (with a page token for the rest)
  int64_t max_queued_per_user = 1000;  // CreateJob answers RESOURCE_EXHAUSTED beyond it for that owner
  int64_t retention_micros = int64_t{30} * 24 * 3600 * 1000000;  // finished jobs are deleted after this
};

bool IsTerminal(v1::JobState state);

// The class of a queued job's waiting_reason, a bounded label for metrics:
// "scheduler" (not yet considered), "no_worker", "slots" (waiting for free
// slots), "unschedulable" (no registered worker is big enough),
// "retry_backoff", "other".
const char* WaitingReasonClass(const std::string& waiting_reason);
// Every class WaitingReasonClass returns, in a fixed order.
const std::vector<std::string>& WaitingReasonClasses();

class JobManager {
 public:
  JobManager(Store* store, const Clock* clock, JobManagerOptions options);

  // Start-up: counts jobs by state and finds the newest id. Call once
  // before serving.
  absl::Status Recover();

  absl::StatusOr<v1::Job> Create(const Principal& who, const v1::JobSpec& spec, const std::string& request_id);
  absl::StatusOr<v1::Job> Get(const Principal& who, const std::string& id);

  struct ListRequest {
    int page_size = 0;  // 0: 50; at most 1000
    std::string page_token;
    std::vector<v1::JobState> states;           // any of (empty: all)
    std::map<std::string, std::string> labels;  // all of
  };
  struct ListResponse {
    std::vector<v1::Job> jobs;  // newest first
    std::string next_page_token;
    int64_t scanned = 0;  // job records read to answer (an owner's list reads only their jobs)
  };
  absl::StatusOr<ListResponse> List(const Principal& who, const ListRequest& request);

  // QUEUED -> CANCELLED; RUNNING -> CANCELLING (the workers stop it);
  // CANCELLING stays; a finished job is FAILED_PRECONDITION.
  absl::StatusOr<v1::Job> Cancel(const Principal& who, const std::string& id);
  // Finished jobs only: the job, its events and its idempotency key.
  absl::Status Delete(const Principal& who, const std::string& id);

  // A WatchJob stream's place: RESOURCE_EXHAUSTED beyond the per-user or the
  // total cap; the place is given back when the returned handle goes.
  class WatchSlot {
   public:
    WatchSlot(JobManager* jobs, std::string who) : jobs_(jobs), who_(std::move(who)) {}
    WatchSlot(WatchSlot&& o) noexcept : jobs_(o.jobs_), who_(std::move(o.who_)) { o.jobs_ = nullptr; }
    WatchSlot(const WatchSlot&) = delete;
    ~WatchSlot();

   private:
    JobManager* jobs_;
    std::string who_;
  };
  absl::StatusOr<WatchSlot> OpenWatch(const Principal& who);

  // Events with seq > after, waiting up to `wait_ms` for the first one (a
  // waiter wakes only for its own job's changes). Empty when none came;
  // UNAVAILABLE once shutting down.
  absl::StatusOr<std::vector<v1::Event>> WaitEvents(const Principal& who, const std::string& id, int64_t after,
                                                    int64_t wait_ms);

  absl::StatusOr<v1::JobReport> Report(const Principal& who, const std::string& id);
  // Writes report.json, report.md and report.html into a finished job's
  // directory (common/report). Not for callers holding the scheduler's lock.
  absl::Status WriteReportFiles(const std::string& id);

  // A transition by the scheduler: `fn` changes the job and returns the
  // events it makes (seq and time are filled in); the job and its events are
  // written in one batch. `fn` must not call back into JobManager.
  using Mutation = std::function<absl::StatusOr<std::vector<v1::Event>>(v1::Job&)>;
  absl::StatusOr<v1::Job> Update(const std::string& id, const Mutation& fn, StoreBatch extra = {});

  // Called (outside JobManager's lock) with the id of every job created or
  // cancelled through this API, so the scheduler can react.
  void SetListener(std::function<void(const std::string& job_id)> listener) { listener_ = std::move(listener); }

  // Deletes finished jobs (with their events and idempotency keys) that
  // ended longer than retention ago; returns how many went.
  absl::StatusOr<int> DeleteExpired();

  // Jobs per state, and jobs created since start, for metrics.
  std::map<v1::JobState, int64_t> CountByState();
  // Queued jobs per WaitingReasonClass (classes with none are absent).
  std::map<std::string, int64_t> CountQueuedByReason();
  int64_t created_total() const { return created_.load(); }
  // Wakes every watcher and makes WaitEvents fail from now on.
  void Shutdown();
  // The lock stripe of job `id` (jobs on different stripes never wait for
  // each other's store writes).
  static size_t LockStripe(const std::string& id) { return std::hash<std::string>()(id) % kJobLockStripes; }

 private:
  absl::StatusOr<v1::Job> Visible(const Principal& who, const std::string& id);
  absl::StatusOr<v1::Job> CreateJob(const Principal& who, const v1::JobSpec& spec, const std::string& request_id);
  absl::StatusOr<v1::Job> CancelJob(const Principal& who, const std::string& id);
  // Writes job + events (seq assigned here) atomically, then updates the
  // counters and wakes the job's watchers. The caller holds the job's stripe.
  absl::Status Commit(v1::Job& job, v1::JobState before, std::vector<v1::Event> events, StoreBatch batch = {})
      ABSL_LOCKS_EXCLUDED(mu_);
  // After a committed transition from `before` (UNSPECIFIED: none) to `job`'s state.
  void Count(const v1::Job& job, v1::JobState before) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WakeWatchers(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NextId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Mutex& JobLock(const std::string& id);

  Store* store_;
  const Clock* clock_;
  JobManagerOptions options_;
  static constexpr int kJobLockStripes = 64;
  std::array<Mutex, kJobLockStripes> job_locks_;
  Mutex mu_;
  CondVar changed_;  // a create in flight ended (creating_)
  int64_t last_id_micros_ ABSL_GUARDED_BY(mu_) = 0;
  std::mt19937 rng_ ABSL_GUARDED_BY(mu_){std::random_device{}()};
  std::uniform_int_distribution<int> id_suffix_ ABSL_GUARDED_BY(mu_){0, 0xffff};
  std::map<v1::JobState, int64_t> counts_ ABSL_GUARDED_BY(mu_);
  // QUEUED jobs per owner, creates in flight included
  std::map<std::string, int64_t> queued_by_owner_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, const char*> queued_reason_ ABSL_GUARDED_BY(mu_);  // queued job id -> reason class
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int64_t> created_{0};
  std::set<std::string> creating_ ABSL_GUARDED_BY(mu_);  // idempotency keys of creates in flight
  struct Waiters {
    CondVar cv;
    int count = 0;
  };
  std::map<std::string, Waiters> waiters_ ABSL_GUARDED_BY(mu_);  // job id -> its watchers
  std::map<std::string, int> watches_ ABSL_GUARDED_BY(mu_);      // principal -> open streams
  int watches_total_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t creating_count_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void(const std::string&)> listener_;
};

}  // namespace topiary::server
