// Writes a job's report files (JobManager::WriteReportFiles) on a thread of
// its own when the job ends, so the scheduler only enqueues. Best effort:
// a failure is logged, and GetJobReport still builds the report on demand.
// Thread-safe.
#pragma once

#include <deque>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"

#include "server/jobs/job_manager.h"

namespace topiary::server {

class ReportWriter {
 public:
  explicit ReportWriter(JobManager* jobs);
  ~ReportWriter();  // writes what is queued, then stops
  void Enqueue(const std::string& job_id);

 private:
  void Loop();
  JobManager* jobs_;
  Mutex mu_;
  CondVar changed_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace topiary::server
