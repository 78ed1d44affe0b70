#include "server/scheduler/rendezvous.h"

#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace topiary::server {
namespace {

absl::Status CheckKey(const std::string& key) {
  std::vector<std::string> parts = absl::StrSplit(key, '/');
  if (parts.size() < 5 || parts[0] != "rdzv" || parts[1].empty()) {
    return absl::InvalidArgumentError(absl::StrCat("key: '", key, "' is not rdzv/<job>/<task>/<attempt>/<name>"));
  }
  if (key.size() > 512) return absl::InvalidArgumentError("key: longer than 512 bytes");
  return absl::OkStatus();
}

}  // namespace

absl::Status RendezvousStore::Set(const std::string& key, const std::string& value) {
  if (absl::Status st = CheckKey(key); !st.ok()) return st;
  if (value.size() > (1 << 20)) return absl::InvalidArgumentError("value: larger than 1 MiB");
  std::lock_guard<std::mutex> lock(mu_);
  kv_[key] = value;
  changed_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> RendezvousStore::Get(const std::string& key, int64_t wait_micros) {
  if (absl::Status st = CheckKey(key); !st.ok()) return st;
  std::unique_lock<std::mutex> lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(wait_micros);
  for (;;) {
    auto it = kv_.find(key);
    if (it != kv_.end()) return std::optional<std::string>(it->second);
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout) {
      it = kv_.find(key);
      return it == kv_.end() ? std::optional<std::string>() : std::optional<std::string>(it->second);
    }
  }
}

void RendezvousStore::DropJob(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string prefix = absl::StrCat("rdzv/", job_id, "/");
  for (auto it = kv_.lower_bound(prefix); it != kv_.end() && it->first.rfind(prefix, 0) == 0;) it = kv_.erase(it);
}

}  // namespace topiary::server
