// Helpers shared by the commands of `topiary`: turning a Status into one
// readable line and an exit code, and printing JSON.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace topiary::cli {

// Exit codes (documented in the README): 0 success, 1 the operation failed,
// 2 bad usage or bad input.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitBadInput = 2;

// Prints "topiary <command>: <message>" to stderr and returns the exit code
// for `status` (kExitOk when ok).
int ReportStatus(absl::string_view command, const absl::Status& status);

}  // namespace topiary::cli
