#include "server/jobs/report_writer.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace topiary::server {

ReportWriter::ReportWriter(JobManager* jobs) : jobs_(jobs), thread_([this] { Loop(); }) {}

ReportWriter::~ReportWriter() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  changed_.SignalAll();
  thread_.join();
}

void ReportWriter::Enqueue(const std::string& job_id) {
  {
    MutexLock lock(&mu_);
    queue_.push_back(job_id);
  }
  changed_.SignalAll();
}

void ReportWriter::Loop() {
  for (;;) {
    std::string id;
    {
      MutexLock lock(&mu_);
      while (!stop_ && queue_.empty()) changed_.Wait(&mu_);
      if (queue_.empty()) return;
      id = queue_.front();
      queue_.pop_front();
    }
    absl::Status st = jobs_->WriteReportFiles(id);
    if (!st.ok()) log::Warn(absl::StrCat("report of ", id, ": ", st.message()));
  }
}

}  // namespace topiary::server
