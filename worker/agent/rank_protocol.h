// The pipe protocol between the worker agent and a rank process it runs
// (docs/design.md, "The worker agent"). The agent starts
//   topiary-rank --assignment FILE --coordinator HOST:PORT --worker-id ID
//                --secret-file FILE [--token-file FILE] [TLS flags]
//                [--memory-budget BYTES] [--storage-root DIR ...]
// with the read end of a pipe as the rank's stdin and the write end of
// another as its fd 3. On stdin the agent writes one word per line: "cancel"
// (checkpoint at the next step boundary and stop: the job is cancelled) or "drain"
// (write a checkpoint at the next step boundary, then stop); end of file
// means the agent is gone (the rank also dies with it: PR_SET_PDEATHSIG).
// On fd 3 the rank writes JSON lines:
//   {"type": "progress", "progress": {Progress as JSON}}    any number
//   {"type": "result", "result": {...}}                     then exit 0
//   {"type": "error", "message": "...", "failure": "task" | "infrastructure" | "cancelled"}
//                                                           then exit 1 (3 when cancelled)
// A rank that exits without a final line failed; the agent reports its exit
// status and the tail of its log. Torch-free; pure functions.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "topiary/v1/job.pb.h"

namespace topiary::agent {

inline constexpr int kRankExitOk = 0;
inline constexpr int kRankExitFailed = 1;
inline constexpr int kRankExitStopped = 3;
inline constexpr int kRankProtocolFd = 3;

struct RankMessage {
  enum class Type { kProgress, kResult, kError } type = Type::kProgress;
  v1::Progress progress;
  bool milestone = false;
  nlohmann::json result;
  std::string message;
  std::string failure;  // task | infrastructure | cancelled
};

std::string ProgressLine(const v1::Progress& progress, bool milestone);
std::string ResultLine(const nlohmann::json& result);
std::string ErrorLine(const std::string& message, const std::string& failure);

// One line from a rank (bounded: lines over 1 MiB are refused).
absl::StatusOr<RankMessage> ParseRankLine(const std::string& line);

}  // namespace topiary::agent
