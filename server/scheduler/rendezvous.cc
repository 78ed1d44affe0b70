#include "server/scheduler/rendezvous.h"

#include <chrono>

#include "absl/strings/str_cat.h"

namespace topiary::server {
namespace {

constexpr char kSep = '\0';

std::string Scope(const std::string& task_id, int attempt) {
  return absl::StrCat(task_id, std::string(1, kSep), attempt, std::string(1, kSep));
}

absl::Status CheckKey(const std::string& key) {
  if (key.empty()) return absl::InvalidArgumentError("key: required");
  if (key.size() > 512) return absl::InvalidArgumentError("key: longer than 512 bytes");
  return absl::OkStatus();
}

}  // namespace

absl::Status RendezvousStore::Set(const std::string& task_id, int attempt, const std::string& key,
                                  const std::string& value) {
  if (absl::Status st = CheckKey(key); !st.ok()) return st;
  if (value.size() > kMaxRendezvousValue) {
    return absl::InvalidArgumentError(absl::StrCat("value: ", value.size(), " bytes; at most ", kMaxRendezvousValue));
  }
  const std::string scope = Scope(task_id, attempt);
  MutexLock lock(&mu_);
  size_t in_scope = 0;
  for (auto it = kv_.lower_bound(scope); it != kv_.end() && it->first.compare(0, scope.size(), scope) == 0; ++it) {
    if (++in_scope >= 1024 && kv_.count(scope + key) == 0) {
      return absl::ResourceExhaustedError("rendezvous: 1,024 keys already set for this task");
    }
  }
  kv_[scope + key] = value;
  changed_.SignalAll();
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> RendezvousStore::Get(const std::string& task_id, int attempt,
                                                                const std::string& key, int64_t wait_micros) {
  if (absl::Status st = CheckKey(key); !st.ok()) return st;
  const std::string full = Scope(task_id, attempt) + key;
  MutexLock lock(&mu_);
  const absl::Time deadline = absl::Now() + absl::Microseconds(wait_micros);
  for (;;) {
    auto it = kv_.find(full);
    if (it != kv_.end()) return std::optional<std::string>(it->second);
    if (changed_.WaitWithDeadline(&mu_, deadline)) {  // timed out
      it = kv_.find(full);
      return it == kv_.end() ? std::optional<std::string>() : std::optional<std::string>(it->second);
    }
  }
}

void RendezvousStore::DropTask(const std::string& task_id) {
  MutexLock lock(&mu_);
  const std::string prefix = task_id + std::string(1, kSep);
  for (auto it = kv_.lower_bound(prefix); it != kv_.end() && it->first.rfind(prefix, 0) == 0;) it = kv_.erase(it);
}

void RendezvousStore::DropJob(const std::string& job_id) {
  MutexLock lock(&mu_);
  const std::string prefix = job_id + "/";  // task ids are <job>/<stage>[/probe-i]
  for (auto it = kv_.lower_bound(prefix); it != kv_.end() && it->first.rfind(prefix, 0) == 0;) it = kv_.erase(it);
}

size_t RendezvousStore::size() {
  MutexLock lock(&mu_);
  return kv_.size();
}

}  // namespace topiary::server
