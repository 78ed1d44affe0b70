#include "client/cli_util.h"

#include <cstdio>
#include <string>

namespace topiary::cli {

int ReportStatus(absl::string_view command, const absl::Status& status) {
  if (status.ok()) return kExitOk;
  std::string msg(status.message());
  for (char& c : msg)
    if (c == '\n') c = ' ';
  std::fprintf(stderr, "topiary %.*s: %s\n", static_cast<int>(command.size()), command.data(), msg.c_str());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
      return kExitBadInput;
    default:
      return kExitFailed;
  }
}

}  // namespace topiary::cli
