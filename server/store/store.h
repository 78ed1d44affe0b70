// The coordinator's durable state (docs/design.md, "The coordinator"): jobs (with their
// stages and tasks), per-job events, idempotency keys and workers. Every
// mutation is one atomic batch; with sync on it is on disk before it
// returns, so nothing acknowledged is lost to a crash.
//
// Two implementations: RocksDB (OpenRocksStore) and an in-memory one for
// unit tests of the code above it (MakeMemoryStore).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "topiary/v1/job.pb.h"

namespace topiary::server {

// One atomic change: jobs written whole, events appended, keys set.
struct StoreBatch {
  std::vector<v1::Job> put_jobs;
  std::vector<v1::Event> events;
  std::vector<std::pair<std::string, std::string>> put_keys;  // idempotency key -> job id
  std::vector<std::string> delete_jobs;                       // with their events
  std::vector<std::string> delete_keys;
  std::vector<std::pair<std::string, std::string>> put_workers;  // worker id -> serialized registration
  std::vector<std::string> delete_workers;
  // False for a change that may be lost in a crash because it is recomputed
  // at start-up (a queued job's waiting reason): not fsynced even with sync on.
  bool durable = true;
};

class Store {
 public:
  virtual ~Store() = default;
  virtual absl::Status Write(const StoreBatch& batch) = 0;
  virtual absl::StatusOr<std::optional<v1::Job>> GetJob(const std::string& id) = 0;
  virtual absl::StatusOr<std::optional<std::string>> GetKey(const std::string& key) = 0;
  // Events of a job with seq > after, in order, at most `limit`.
  virtual absl::StatusOr<std::vector<v1::Event>> Events(const std::string& job_id, int64_t after, int limit) = 0;
  // Jobs in descending id order (ids are time-ordered: newest first),
  // starting after `after` (empty: from the newest). `fn` returns false to stop.
  virtual absl::Status ScanJobs(const std::string& after, const std::function<bool(const v1::Job&)>& fn) = 0;
  // One owner's jobs, newest first, after `after` (an index: other owners'
  // jobs are never read). `fn` returns false to stop.
  virtual absl::Status ScanJobsOf(const std::string& owner, const std::string& after,
                                  const std::function<bool(const v1::Job&)>& fn) = 0;
  // Every owner's jobs in one state, newest first, after `after` (an index).
  virtual absl::Status ScanJobsIn(v1::JobState state, const std::string& after,
                                  const std::function<bool(const v1::Job&)>& fn) = 0;
  // Every registered worker: (id, serialized registration).
  virtual absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Workers() = 0;
  // After a failed write: tries to make the store writable again (RocksDB
  // resumes from its background error) and proves it with one synced write.
  virtual absl::Status Recover() { return absl::OkStatus(); }
  // A consistent copy of the whole store in `dir` (which must not exist), as
  // of one moment, while it keeps serving: a directory OpenRocksStore opens.
  virtual absl::Status Checkpoint(const std::string& dir) {
    return absl::UnimplementedError("this store has no checkpoints");
  }
};

// A store that passes every call to another: decorators (health, write
// timing, tests' gates) derive from it and override what they change.
class ForwardingStore : public Store {
 public:
  explicit ForwardingStore(std::unique_ptr<Store> inner) : inner_(std::move(inner)) {}
  absl::Status Write(const StoreBatch& b) override { return inner_->Write(b); }
  absl::StatusOr<std::optional<v1::Job>> GetJob(const std::string& id) override { return inner_->GetJob(id); }
  absl::StatusOr<std::optional<std::string>> GetKey(const std::string& k) override { return inner_->GetKey(k); }
  absl::StatusOr<std::vector<v1::Event>> Events(const std::string& job, int64_t after, int limit) override {
    return inner_->Events(job, after, limit);
  }
  absl::Status ScanJobs(const std::string& after, const std::function<bool(const v1::Job&)>& fn) override {
    return inner_->ScanJobs(after, fn);
  }
  absl::Status ScanJobsOf(const std::string& owner, const std::string& after,
                          const std::function<bool(const v1::Job&)>& fn) override {
    return inner_->ScanJobsOf(owner, after, fn);
  }
  absl::Status ScanJobsIn(v1::JobState state, const std::string& after,
                          const std::function<bool(const v1::Job&)>& fn) override {
    return inner_->ScanJobsIn(state, after, fn);
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Workers() override { return inner_->Workers(); }
  absl::Status Recover() override { return inner_->Recover(); }
  absl::Status Checkpoint(const std::string& dir) override { return inner_->Checkpoint(dir); }

 protected:
  Store& inner() { return *inner_; }

 private:
  std::unique_ptr<Store> inner_;
};

// Write failures of `store` make it unhealthy: that write and every later
// one answer UNAVAILABLE at once (nothing half-written is acknowledged), and
// `on_health(false)` is called; a thread then tries Store::Recover every
// `probe_interval` and, once it succeeds, calls `on_health(true)` and lets
// writes through again. Thread-safe.
std::unique_ptr<Store> WithHealth(std::unique_ptr<Store> store, std::function<void(bool healthy)> on_health,
                                  int64_t probe_interval_ms = 500);

struct RocksStoreOptions {
  std::string dir;
  bool sync = true;  // fsync every batch before Write returns
};

// Opens (creating if needed) the store; refuses a schema it does not know.
absl::StatusOr<std::unique_ptr<Store>> OpenRocksStore(const RocksStoreOptions& options);

std::unique_ptr<Store> MakeMemoryStore();

// 2: the job index (owner; state). A store of version 1 is indexed when opened.
inline constexpr int kSchemaVersion = 2;

// Index keys of a job: by owner, and by state.
std::string OwnerIndexKey(const std::string& owner, const std::string& job_id);
std::string StateIndexKey(v1::JobState state, const std::string& job_id);

}  // namespace topiary::server
