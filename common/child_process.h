// Child processes a command starts and owns (topiary run's coordinator and
// workers): started with fork+exec, output to a log file, in their own
// process group (a terminal's Ctrl-C reaches only the parent, which decides
// what to stop), optionally sent a signal when the parent dies
// (PR_SET_PDEATHSIG; it fires when the thread that started the child ends,
// so start children from a thread that lives as long as they should).
// Thread-compatible.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace topiary {

struct ChildOptions {
  std::string log;  // stdout and stderr (appended); empty: /dev/null
  bool own_process_group = true;
  int death_signal = 0;  // sent to the child when the parent dies (0: none)
};

absl::StatusOr<pid_t> SpawnChild(const std::vector<std::string>& argv, const ChildOptions& options);

// Sends `sig` (if not 0), waits up to `timeout` for the child to exit, then
// kills its process group. Returns the exit code (-signal when killed).
int StopChild(pid_t pid, int sig, absl::Duration timeout);

// The child's exit code if it has exited (-signal when killed); nullopt-like -1000 while it runs.
inline constexpr int kStillRunning = -1000;
int PollChild(pid_t pid);

}  // namespace topiary
