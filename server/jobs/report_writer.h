// Writes a job's report files (JobManager::WriteReportFiles) on a thread of
// its own when the job ends, so the scheduler only enqueues. Best effort:
// a failure is logged, and GetJobReport still builds the report on demand.
// Thread-safe.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

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
  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<std::string> queue_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace topiary::server
