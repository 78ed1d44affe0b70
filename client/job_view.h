// Showing a job as it runs, for `topiary watch` and `topiary run`: a line per
// event and, on a terminal, one progress bar per running stage (step/total,
// tokens/s, loss, ETA) kept under the event lines; when the output is not a
// terminal, plain lines (progress at most every 5 s per stage, and at each
// phase change and last step). Not thread-safe: one view per stream.
#pragma once

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "topiary/v1/job_service.grpc.pb.h"

namespace topiary::cli {

std::string EventLine(const v1::Event& e);
std::string JobStateName(v1::JobState s);  // SUCCEEDED, RUNNING, ...

class JobView {
 public:
  JobView(FILE* out, bool tty) : out_(out), tty_(tty) {}
  void Show(const v1::WatchJobResponse& r);
  void Close();  // removes the bars

 private:
  void Erase();
  void Draw();
  FILE* out_;
  bool tty_;
  int drawn_ = 0;                                   // bar lines on screen
  std::map<std::string, v1::Progress> running_;     // stage -> latest progress
  std::map<std::string, int64_t> last_printed_ms_;  // plain mode: stage -> last progress line
  std::map<std::string, std::string> last_phase_;
};

// Streams a job's events into `sink` until the job ends, reconnecting from
// the last sequence number when the stream breaks (nothing is missed or
// repeated). Returns the job's final state.
using StreamSink = std::function<void(const v1::WatchJobResponse&)>;
using ContextFactory = std::function<std::unique_ptr<grpc::ClientContext>()>;
absl::StatusOr<v1::JobState> StreamJob(v1::JobService::Stub& stub, const ContextFactory& ctx, const std::string& id,
                                       int64_t from_seq, const StreamSink& sink);

}  // namespace topiary::cli
