// The state directory of `topiary run` (docs/design.md, "One machine"): a
// coordinator's RocksDB and everything needed to reach it again:
//   <state>/db/            the coordinator's store
//   <state>/tokens         admin and worker tokens (0600), fresh for each run
//   <state>/admin-token    the admin token, for the CLI
//   <state>/worker-token   the worker token, for the workers
//   <state>/storage        the storage root the jobs were run with
//   <state>/port           the coordinator's port while one serves this state
//   <state>/job            the job `topiary run` runs (for --resume)
//   <state>/logs/          coordinator.log, worker-<i>.log
//   <state>/workers/<i>/   each worker's work directory
// API commands given --state-dir use the coordinator that serves it, or
// start one for the duration of the command (no workers, nothing expires).
// Not thread-safe.
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace topiary::cli {

struct LocalState {
  std::string dir;
  std::string Path(const std::string& name) const { return dir + "/" + name; }
};

struct LocalCoordinator {
  std::string address;  // 127.0.0.1:PORT
  std::string token;    // admin
  pid_t pid = -1;       // started by this process (-1: attached to a running one)
};

// The directory holding this binary (its sibling programs live there).
std::string BinaryDir();

// Creates the state directory (and a fresh pair of tokens when `fresh_tokens`).
absl::StatusOr<LocalState> OpenLocalState(const std::string& dir, bool fresh_tokens, const std::string& storage);

// A coordinator serving `state`: the running one if its port answers, else
// one started now. `lease_seconds` and `recovery_grace_seconds` pass through.
absl::StatusOr<LocalCoordinator> AttachOrStartCoordinator(const LocalState& state, double lease_seconds,
                                                          double recovery_grace_seconds, int death_signal);

// Stops a coordinator this process started (SIGTERM, then SIGKILL after `seconds`).
void StopCoordinator(LocalCoordinator& c, double seconds);

}  // namespace topiary::cli
