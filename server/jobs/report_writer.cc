#include "server/jobs/report_writer.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace topiary::server {

ReportWriter::ReportWriter(JobManager* jobs) : jobs_(jobs), thread_([this] { Loop(); }) {}

ReportWriter::~ReportWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void ReportWriter::Enqueue(const std::string& job_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(job_id);
  }
  changed_.notify_all();
}

void ReportWriter::Loop() {
  for (;;) {
    std::string id;
    {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      id = queue_.front();
      queue_.pop_front();
    }
    absl::Status st = jobs_->WriteReportFiles(id);
    if (!st.ok()) log::Warn(absl::StrCat("report of ", id, ": ", st.message()));
  }
}

}  // namespace topiary::server
