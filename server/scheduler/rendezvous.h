// The rendezvous key/value the ranks of a task use to find each other
// (worker/dist's Rendezvous through the coordinator). Keys are
// rdzv/<job>/<task>/<attempt>/<name>, so a retried task starts clean. Kept
// in memory: a coordinator restart fails running tasks' rendezvous, and
// their retries use a new attempt. Thread-safe.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace topiary::server {

class RendezvousStore {
 public:
  absl::Status Set(const std::string& key, const std::string& value);
  // Waits up to wait_micros for the key; nullopt when it did not appear.
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key, int64_t wait_micros);
  // Forgets every key of a job (when it finishes).
  void DropJob(const std::string& job_id);

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, std::string> kv_;
};

}  // namespace topiary::server
