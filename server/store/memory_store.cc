// The in-memory Store for unit tests: the same semantics, no durability.
#include <map>
#include <set>
#include "absl/base/thread_annotations.h"
#include "common/mutex.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/store/store.h"

namespace topiary::server {
namespace {

class MemoryStore : public Store {
 public:
  absl::Status Write(const StoreBatch& b) override {
    MutexLock lock(&mu_);
    for (const std::string& id : b.delete_jobs) {
      auto it = jobs_.find(id);
      if (it != jobs_.end()) {
        index_.erase(OwnerIndexKey(it->second.owner(), id));
        index_.erase(StateIndexKey(it->second.state(), id));
      }
      jobs_.erase(id), events_.erase(id);
    }
    for (const std::string& k : b.delete_keys) keys_.erase(k);
    for (const v1::Job& j : b.put_jobs) {
      auto it = jobs_.find(j.id());
      if (it != jobs_.end()) index_.erase(StateIndexKey(it->second.state(), j.id()));
      index_.insert(OwnerIndexKey(j.owner(), j.id()));
      index_.insert(StateIndexKey(j.state(), j.id()));
      jobs_[j.id()] = j;
    }
    for (const v1::Event& e : b.events) events_[e.job_id()][e.seq()] = e;
    for (const auto& [k, v] : b.put_keys) keys_[k] = v;
    for (const std::string& w : b.delete_workers) workers_.erase(w);
    for (const auto& [k, v] : b.put_workers) workers_[k] = v;
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<v1::Job>> GetJob(const std::string& id) override {
    MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    return it == jobs_.end() ? std::optional<v1::Job>() : std::optional<v1::Job>(it->second);
  }
  absl::StatusOr<std::optional<std::string>> GetKey(const std::string& key) override {
    MutexLock lock(&mu_);
    auto it = keys_.find(key);
    return it == keys_.end() ? std::optional<std::string>() : std::optional<std::string>(it->second);
  }
  absl::StatusOr<std::vector<v1::Event>> Events(const std::string& job, int64_t after, int limit) override {
    MutexLock lock(&mu_);
    std::vector<v1::Event> out;
    auto it = events_.find(job);
    if (it == events_.end()) return out;
    for (auto e = it->second.upper_bound(after); e != it->second.end() && static_cast<int>(out.size()) < limit; ++e) {
      out.push_back(e->second);
    }
    return out;
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Workers() override {
    MutexLock lock(&mu_);
    return std::vector<std::pair<std::string, std::string>>(workers_.begin(), workers_.end());
  }
  absl::Status ScanJobsOf(const std::string& owner, const std::string& after,
                          const std::function<bool(const v1::Job&)>& fn) override {
    return ScanIndex(OwnerIndexKey(owner, ""), after, fn);
  }
  absl::Status ScanJobsIn(v1::JobState state, const std::string& after,
                          const std::function<bool(const v1::Job&)>& fn) override {
    return ScanIndex(StateIndexKey(state, ""), after, fn);
  }
  absl::Status ScanJobs(const std::string& after, const std::function<bool(const v1::Job&)>& fn) override {
    std::vector<v1::Job> snapshot;
    {
      MutexLock lock(&mu_);
      auto end = after.empty() ? jobs_.end() : jobs_.lower_bound(after);
      for (auto it = std::make_reverse_iterator(end); it != jobs_.rend(); ++it) snapshot.push_back(it->second);
    }
    for (const v1::Job& j : snapshot) {
      if (!fn(j)) break;
    }
    return absl::OkStatus();
  }

 private:
  absl::Status ScanIndex(const std::string& prefix, const std::string& after,
                         const std::function<bool(const v1::Job&)>& fn) {
    std::vector<v1::Job> snapshot;
    {
      MutexLock lock(&mu_);
      auto end = after.empty() ? index_.lower_bound(prefix + "\xff") : index_.lower_bound(prefix + after);
      for (auto it = std::make_reverse_iterator(end); it != index_.rend() && it->rfind(prefix, 0) == 0; ++it) {
        auto j = jobs_.find(it->substr(prefix.size()));
        if (j != jobs_.end()) snapshot.push_back(j->second);
      }
    }
    for (const v1::Job& j : snapshot) {
      if (!fn(j)) break;
    }
    return absl::OkStatus();
  }

  Mutex mu_;
  std::set<std::string> index_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::Job> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<int64_t, v1::Event>> events_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> keys_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> workers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::string OwnerIndexKey(const std::string& owner, const std::string& job_id) {
  return absl::StrCat("o", std::string(1, '\0'), owner, std::string(1, '\0'), job_id);
}

std::string StateIndexKey(v1::JobState state, const std::string& job_id) {
  return absl::StrCat("s", std::string(1, '\0'), absl::StrFormat("%02d", static_cast<int>(state)), std::string(1, '\0'),
                      job_id);
}

std::unique_ptr<Store> MakeMemoryStore() { return std::make_unique<MemoryStore>(); }

}  // namespace topiary::server
