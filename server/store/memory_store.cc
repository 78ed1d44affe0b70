// The in-memory Store for unit tests: the same semantics, no durability.
#include <map>
#include <mutex>

#include "absl/strings/str_format.h"
#include "server/store/store.h"

namespace topiary::server {
namespace {

class MemoryStore : public Store {
 public:
  absl::Status Write(const StoreBatch& b) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const std::string& id : b.delete_jobs) jobs_.erase(id), events_.erase(id);
    for (const std::string& k : b.delete_keys) keys_.erase(k);
    for (const v1::Job& j : b.put_jobs) jobs_[j.id()] = j;
    for (const v1::Event& e : b.events) events_[e.job_id()][e.seq()] = e;
    for (const auto& [k, v] : b.put_keys) keys_[k] = v;
    for (const std::string& w : b.delete_workers) workers_.erase(w);
    for (const auto& [k, v] : b.put_workers) workers_[k] = v;
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<v1::Job>> GetJob(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    return it == jobs_.end() ? std::optional<v1::Job>() : std::optional<v1::Job>(it->second);
  }
  absl::StatusOr<std::optional<std::string>> GetKey(const std::string& key) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = keys_.find(key);
    return it == keys_.end() ? std::optional<std::string>() : std::optional<std::string>(it->second);
  }
  absl::StatusOr<std::vector<v1::Event>> Events(const std::string& job, int64_t after, int limit) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<v1::Event> out;
    auto it = events_.find(job);
    if (it == events_.end()) return out;
    for (auto e = it->second.upper_bound(after); e != it->second.end() && static_cast<int>(out.size()) < limit; ++e) {
      out.push_back(e->second);
    }
    return out;
  }
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Workers() override {
    std::lock_guard<std::mutex> lock(mu_);
    return std::vector<std::pair<std::string, std::string>>(workers_.begin(), workers_.end());
  }
  absl::Status ScanJobs(const std::string& after, const std::function<bool(const v1::Job&)>& fn) override {
    std::vector<v1::Job> snapshot;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto end = after.empty() ? jobs_.end() : jobs_.lower_bound(after);
      for (auto it = std::make_reverse_iterator(end); it != jobs_.rend(); ++it) snapshot.push_back(it->second);
    }
    for (const v1::Job& j : snapshot) {
      if (!fn(j)) break;
    }
    return absl::OkStatus();
  }

 private:
  std::mutex mu_;
  std::map<std::string, v1::Job> jobs_;
  std::map<std::string, std::map<int64_t, v1::Event>> events_;
  std::map<std::string, std::string> keys_;
  std::map<std::string, std::string> workers_;
};

}  // namespace

std::unique_ptr<Store> MakeMemoryStore() { return std::make_unique<MemoryStore>(); }

}  // namespace topiary::server
