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

class GatedStore : public ForwardingStore {
 public:
  explicit GatedStore(std::unique_ptr<Store> inner) : ForwardingStore(std::move(inner)) {}

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
    return inner().Write(b);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string held_;
  int blocked_ = 0;
};

}  // namespace topiary::server::testing
