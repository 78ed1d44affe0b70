// A Store that forwards to another and can hold up the writes that touch one
// job, as a slow fsync would: for tests of what goes on meanwhile.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "server/store/store.h"

namespace topiary::server::testing {

class GatedStore : public Store {
 public:
  explicit GatedStore(std::unique_ptr<Store> inner) : inner_(std::move(inner)) {}

  // From now on, a write whose batch puts job `id` waits until Release().
  void Hold(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    held_ = id;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    held_.clear();
    cv_.notify_all();
  }
  // True once a writer is waiting at the gate (within `timeout`).
  bool WaitUntilBlocked(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return blocked_ > 0; });
  }

  absl::Status Write(const StoreBatch& b) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto touches = [&] {
        for (const v1::Job& j : b.put_jobs) {
          if (!held_.empty() && j.id() == held_) return true;
        }
        return false;
      };
      if (touches()) {
        ++blocked_;
        cv_.notify_all();
        cv_.wait(lock, [&] { return !touches(); });
        --blocked_;
      }
    }
    return inner_->Write(b);
  }
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

 private:
  std::unique_ptr<Store> inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string held_;
  int blocked_ = 0;
};

}  // namespace topiary::server::testing
