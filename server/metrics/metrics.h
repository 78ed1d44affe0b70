// The coordinator's Prometheus metrics (docs/design.md, "The coordinator"), exposed by
// prometheus-cpp on --metrics-address. Job gauges are computed at scrape
// time from JobManager, so they are never stale:
//   topiary_jobs{state}               jobs per state (every state, 0 included)
//   topiary_queue_depth               queued jobs
//   topiary_queue_waiting{reason}     queued jobs by WaitingReasonClass
//   topiary_job_submissions_total     jobs created since start
//   topiary_grpc_requests_total{method,code}
//   topiary_store_write_seconds       histogram of synced store batches
//   topiary_backup_last_success_timestamp_seconds  the last backup (--backup-dir)
//   topiary_workers{state}            live | lost
//   topiary_slots{state}              used | free (live workers)
//   topiary_schedule_latency_seconds  histogram of one placement decision
//   topiary_stage_duration_seconds{stage}  histogram of finished stages
//   topiary_train_loss{job_id}, topiary_train_tokens_total{job_id},
//   topiary_train_tokens_per_second{job_id}, topiary_train_mfu_ratio{job_id}
//                                     per running job, from the workers'
//                                     reports; gone when the job ends
// (bounded cardinality).
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "server/jobs/job_manager.h"
#include "server/scheduler/scheduler.h"
#include "server/store/store.h"

namespace topiary::server {

class CoordinatorMetrics {
 public:
  CoordinatorMetrics();

  // Registers the scrape-time job gauges of `jobs` (which must outlive this).
  void WatchJobs(JobManager* jobs);
  // Registers the scheduler's series (it must outlive this).
  void WatchScheduler(Scheduler* scheduler);
  void CountRequest(const std::string& method, int grpc_code);
  void ObserveStoreWrite(double seconds);
  // topiary_store_healthy: 1 while store writes work, 0 while they fail.
  void SetStoreHealthy(bool healthy);
  // topiary_backup_last_success_timestamp_seconds (with --backup-dir only).
  void SetLastBackup(int64_t unix_seconds);

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  std::shared_ptr<prometheus::Collectable> job_gauges() const { return jobs_; }
  std::shared_ptr<prometheus::Collectable> scheduler_series() const { return scheduler_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Histogram* store_write_;
  prometheus::Gauge* store_healthy_;
  prometheus::Family<prometheus::Gauge>* last_backup_;
  std::shared_ptr<prometheus::Collectable> jobs_;
  std::shared_ptr<prometheus::Collectable> scheduler_;
};

// A Store that reports the duration of every Write to `metrics`.
std::unique_ptr<Store> WithWriteTiming(std::unique_ptr<Store> store, CoordinatorMetrics* metrics);

}  // namespace topiary::server
