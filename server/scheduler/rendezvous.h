// The rendezvous key/value the ranks of a task use to find each other
// (worker/dist's Rendezvous through the coordinator). Keys live in the scope
// of one attempt of one task (the scheduler checks that the caller has a
// rank of that attempt before it reaches this store), so a retried task
// starts clean; values are at most kMaxRendezvousValue bytes, keys at most
// 512, and at most 1,024 keys per scope. Kept in memory: a coordinator
// restart loses the keys, and ranks that still need them fail over to a new
// attempt. Thread-safe.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"

namespace topiary::server {

inline constexpr size_t kMaxRendezvousValue = 64 * 1024;

class RendezvousStore {
 public:
  absl::Status Set(const std::string& task_id, int attempt, const std::string& key, const std::string& value);
  // Waits up to wait_micros for the key; nullopt when it did not appear.
  absl::StatusOr<std::optional<std::string>> Get(const std::string& task_id, int attempt, const std::string& key,
                                                 int64_t wait_micros);
  // Forgets every key of every attempt of a task (when an attempt ends).
  void DropTask(const std::string& task_id);
  // Forgets every key of a job's tasks (when it ends).
  void DropJob(const std::string& job_id);
  // Keys held, for tests and metrics.
  size_t size();

 private:
  Mutex mu_;
  CondVar changed_;
  std::map<std::string, std::string> kv_ ABSL_GUARDED_BY(mu_);  // "<task id>\0<attempt>\0<key>" -> value
};

}  // namespace topiary::server
