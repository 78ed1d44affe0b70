#include <atomic>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "common/mutex.h"
#include "common/log.h"
#include "server/store/store.h"

namespace topiary::server {
namespace {

class HealthStore : public ForwardingStore {
 public:
  HealthStore(std::unique_ptr<Store> inner, std::function<void(bool)> on_health, int64_t probe_ms)
      : ForwardingStore(std::move(inner)), on_health_(std::move(on_health)), probe_ms_(probe_ms) {}
  ~HealthStore() override {
    {
      MutexLock lock(&mu_);
      stop_ = true;
    }
    cv_.SignalAll();
    if (prober_.joinable()) prober_.join();
  }

  absl::Status Write(const StoreBatch& b) override {
    if (!healthy_.load()) {
      return absl::UnavailableError(
          absl::StrCat("store: writes are failing (", last_error(), "); nothing was changed, try again later"));
    }
    absl::Status s = inner().Write(b);
    if (!s.ok() && (absl::IsUnavailable(s) || absl::IsInternal(s))) {
      MarkUnhealthy(s);
      return absl::UnavailableError(absl::StrCat(s.message(), "; nothing was changed, try again later"));
    }
    return s;
  }

 private:
  std::string last_error() {
    MutexLock lock(&mu_);
    return error_;
  }

  void MarkUnhealthy(const absl::Status& s) {
    MutexLock lock(&mu_);
    error_ = std::string(s.message());
    if (!healthy_.exchange(false)) return;
    log::Error(absl::StrCat("store: a write failed (", s.message(), "); NOT_SERVING until the disk recovers"));
    if (on_health_) on_health_(false);
    if (prober_.joinable()) prober_.join();  // the previous prober has finished (it set healthy)
    prober_ = std::thread([this] { Probe(); });
  }

  void Probe() {
    MutexLock lock(&mu_);
    while (!stop_) {
      cv_.WaitWithTimeout(&mu_, absl::Milliseconds(probe_ms_));
      if (stop_) return;
      mu_.Unlock();
      absl::Status s = inner().Recover();
      mu_.Lock();
      if (s.ok()) {
        log::Info("store: writes work again; SERVING");
        healthy_.store(true);
        if (on_health_) on_health_(true);
        return;
      }
      error_ = std::string(s.message());
    }
  }

  std::function<void(bool)> on_health_;
  const int64_t probe_ms_;
  std::atomic<bool> healthy_{true};
  Mutex mu_;
  CondVar cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::string error_ ABSL_GUARDED_BY(mu_);
  std::thread prober_;
};

}  // namespace

std::unique_ptr<Store> WithHealth(std::unique_ptr<Store> store, std::function<void(bool)> on_health,
                                  int64_t probe_interval_ms) {
  return std::make_unique<HealthStore>(std::move(store), std::move(on_health), probe_interval_ms);
}

}  // namespace topiary::server
