#include "server/metrics/metrics.h"

#include <prometheus/gauge.h>

#include <chrono>
#include <map>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"

namespace topiary::server {
namespace {

class JobGauges : public prometheus::Collectable {
 public:
  explicit JobGauges(JobManager* jobs) : jobs_(jobs) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    const std::map<v1::JobState, int64_t> counts = jobs_->CountByState();
    auto count = [&](v1::JobState s) {
      auto it = counts.find(s);
      return it == counts.end() ? 0.0 : static_cast<double>(it->second);
    };
    prometheus::MetricFamily by_state{"topiary_jobs", "Jobs by state.", prometheus::MetricType::Gauge, {}};
    for (int s = v1::JobState_MIN; s <= v1::JobState_MAX; ++s) {
      if (s == v1::JOB_STATE_UNSPECIFIED || !v1::JobState_IsValid(s)) continue;
      prometheus::ClientMetric m;
      std::string name = v1::JobState_Name(static_cast<v1::JobState>(s));
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      m.label.push_back({"state", name.substr(4)});  // JOB_QUEUED -> queued
      m.gauge.value = count(static_cast<v1::JobState>(s));
      by_state.metric.push_back(m);
    }
    prometheus::MetricFamily depth{
        "topiary_queue_depth", "Jobs waiting to be scheduled.", prometheus::MetricType::Gauge, {}};
    prometheus::ClientMetric d;
    d.gauge.value = count(v1::JOB_QUEUED);
    depth.metric.push_back(d);
    prometheus::MetricFamily created{"topiary_job_submissions_total",
                                     "Jobs created since the coordinator started.",
                                     prometheus::MetricType::Counter,
                                     {}};
    prometheus::ClientMetric c;
    c.counter.value = static_cast<double>(jobs_->created_total());
    created.metric.push_back(c);
    prometheus::MetricFamily waiting{"topiary_queue_waiting",
                                     "Queued jobs by why they wait (scheduler, no_worker, slots, unschedulable, "
                                     "retry_backoff, other).",
                                     prometheus::MetricType::Gauge,
                                     {}};
    const std::map<std::string, int64_t> reasons = jobs_->CountQueuedByReason();
    for (const std::string& reason : WaitingReasonClasses()) {
      prometheus::ClientMetric m;
      m.label.push_back({"reason", reason});
      auto it = reasons.find(reason);
      m.gauge.value = it == reasons.end() ? 0.0 : static_cast<double>(it->second);
      waiting.metric.push_back(m);
    }
    return {by_state, depth, created, waiting};
  }

 private:
  JobManager* jobs_;
};

prometheus::ClientMetric Value(double v, std::vector<prometheus::ClientMetric::Label> labels, bool counter = false) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  if (counter)
    m.counter.value = v;
  else
    m.gauge.value = v;
  return m;
}

class SchedulerSeries : public prometheus::Collectable {
 public:
  explicit SchedulerSeries(Scheduler* s)
      : scheduler_(s),
        latency_(
            prometheus::Histogram::BucketBoundaries{0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1}) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    MutexLock lock(&mu_);
    Scheduler::Stats st = scheduler_->TakeStats();
    for (double d : st.decision_seconds) latency_.Observe(d);
    for (const auto& [stage, sec] : st.stage_seconds) {
      auto it = stages_.find(stage);
      if (it == stages_.end()) {
        it = stages_
                 .emplace(stage, std::make_unique<prometheus::Histogram>(prometheus::Histogram::BucketBoundaries{
                                     1, 10, 60, 300, 1800, 3600, 4 * 3600, 24 * 3600}))
                 .first;
      }
      it->second->Observe(sec);
    }
    using MF = prometheus::MetricFamily;
    using MT = prometheus::MetricType;
    MF workers{"topiary_workers", "Registered workers by state.", MT::Gauge, {}};
    workers.metric = {Value(st.workers_live, {{"state", "live"}}), Value(st.workers_lost, {{"state", "lost"}})};
    MF slots{"topiary_slots", "Slots of live workers by state.", MT::Gauge, {}};
    slots.metric = {Value(st.slots_used, {{"state", "used"}}),
                    Value(st.slots_total - st.slots_used, {{"state", "free"}})};
    MF latency{
        "topiary_schedule_latency_seconds", "Duration of one placement decision.", MT::Histogram, {latency_.Collect()}};
    MF stage{"topiary_stage_duration_seconds", "Duration of finished stages.", MT::Histogram, {}};
    for (const auto& [name, h] : stages_) {
      prometheus::ClientMetric m = h->Collect();
      m.label = {{"stage", name}};
      stage.metric.push_back(m);
    }
    MF loss{"topiary_train_loss", "Training loss of running jobs.", MT::Gauge, {}};
    MF tokens{"topiary_train_tokens_total", "Tokens trained by running jobs.", MT::Counter, {}};
    MF tps{"topiary_train_tokens_per_second", "Training throughput of running jobs.", MT::Gauge, {}};
    MF mfu{"topiary_train_mfu_ratio", "Model FLOP utilisation of running jobs.", MT::Gauge, {}};
    for (const auto& entry : st.job_metrics) {
      const std::string& job = entry.first;
      const std::map<std::string, double>& m = entry.second;
      auto get = [&](const char* k, MF& f, bool counter) {
        auto it = m.find(k);
        if (it != m.end())
          f.metric.push_back(Value(it->second, {{"job_id", job}}, counter));  // "job" is the scrape job's label
      };
      get("loss", loss, false);
      get("tokens", tokens, true);
      get("tokens_per_second", tps, false);
      get("mfu", mfu, false);
    }
    std::vector<MF> out{workers, slots, latency};
    for (MF* f : {&stage, &loss, &tokens, &tps, &mfu}) {
      if (!f->metric.empty()) out.push_back(*f);
    }
    return out;
  }

 private:
  Scheduler* scheduler_;
  mutable Mutex mu_;
  mutable prometheus::Histogram latency_ ABSL_GUARDED_BY(mu_);
  mutable std::map<std::string, std::unique_ptr<prometheus::Histogram>> stages_ ABSL_GUARDED_BY(mu_);
};

class TimedStore : public ForwardingStore {
 public:
  TimedStore(std::unique_ptr<Store> inner, CoordinatorMetrics* m) : ForwardingStore(std::move(inner)), metrics_(m) {}
  absl::Status Write(const StoreBatch& b) override {
    const auto t0 = std::chrono::steady_clock::now();
    absl::Status s = inner().Write(b);
    metrics_->ObserveStoreWrite(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return s;
  }

 private:
  CoordinatorMetrics* metrics_;
};

}  // namespace

CoordinatorMetrics::CoordinatorMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("topiary_grpc_requests_total")
                   .Help("gRPC requests by method and status code.")
                   .Register(*registry_);
  store_write_ =
      &prometheus::BuildHistogram()
           .Name("topiary_store_write_seconds")
           .Help("Duration of one durable store batch (synced when --sync).")
           .Register(*registry_)
           .Add({}, prometheus::Histogram::BucketBoundaries{0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1});
  store_healthy_ = &prometheus::BuildGauge()
                        .Name("topiary_store_healthy")
                        .Help("1 while store writes work; 0 while they fail (the coordinator is NOT_SERVING).")
                        .Register(*registry_)
                        .Add({});
  last_backup_ = &prometheus::BuildGauge()
                      .Name("topiary_backup_last_success_timestamp_seconds")
                      .Help("When the last backup of the store (--backup-dir) was written, in Unix seconds.")
                      .Register(*registry_);
  store_healthy_->Set(1);
}

void CoordinatorMetrics::SetStoreHealthy(bool healthy) { store_healthy_->Set(healthy ? 1 : 0); }

void CoordinatorMetrics::SetLastBackup(int64_t unix_seconds) {
  last_backup_->Add({}).Set(static_cast<double>(unix_seconds));
}

void CoordinatorMetrics::WatchJobs(JobManager* jobs) { jobs_ = std::make_shared<JobGauges>(jobs); }

void CoordinatorMetrics::WatchScheduler(Scheduler* scheduler) {
  scheduler_ = std::make_shared<SchedulerSeries>(scheduler);
}

void CoordinatorMetrics::CountRequest(const std::string& method, int code) {
  static const char* const kCodes[] = {
      "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS", "UNAUTHENTICATED"};
  const char* name = code >= 0 && code <= 16 ? kCodes[code] : "UNKNOWN";
  requests_->Add({{"method", method}, {"code", name}}).Increment();
}

void CoordinatorMetrics::ObserveStoreWrite(double seconds) { store_write_->Observe(seconds); }

std::unique_ptr<Store> WithWriteTiming(std::unique_ptr<Store> store, CoordinatorMetrics* metrics) {
  return std::make_unique<TimedStore>(std::move(store), metrics);
}

}  // namespace topiary::server
