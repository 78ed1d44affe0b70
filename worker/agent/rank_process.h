// One rank process of the worker agent (rank_protocol.h): started with
// fork+exec so that it dies with the agent (PR_SET_PDEATHSIG) and sits in
// its own process group (a terminal's Ctrl-C reaches the agent, which
// decides), with its stdin and fd 3 as pipes and its stdout/stderr in a log
// file. A thread reads its messages until it exits and hands them to the
// callbacks. Thread-safe.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "worker/agent/rank_protocol.h"

namespace topiary::agent {

class RankProcess {
 public:
  struct Callbacks {
    std::function<void(const RankMessage&)> message;  // progress, result or error lines
    // The process ended: its wait status and the tail of its log.
    std::function<void(int wait_status, const std::string& log_tail)> exited;
  };
  // Starts argv[0] with `argv`; output to `log`.
  static absl::StatusOr<std::unique_ptr<RankProcess>> Start(const std::vector<std::string>& argv,
                                                            const std::string& log, Callbacks callbacks);
  ~RankProcess();  // kills the process if it still runs, joins the reader

  // Writes one line to the rank's stdin ("cancel", "drain").
  void Tell(const std::string& word);
  void Kill();  // SIGKILL to its process group
  pid_t pid() const { return pid_; }
  bool running() const { return running_.load(); }

 private:
  RankProcess() = default;
  void Read();

  pid_t pid_ = -1;
  int stdin_fd_ = -1, proto_fd_ = -1;
  std::string log_;
  Callbacks callbacks_;
  std::atomic<bool> running_{true};
  std::mutex mu_;
  std::thread reader_;
};

// The last `max_lines` lines of a file, at most 2 KiB.
std::string LogTail(const std::string& path, int max_lines = 15);

// "exited with status 1", "killed by signal 6 (Aborted)".
std::string DescribeWaitStatus(int status);

}  // namespace topiary::agent
