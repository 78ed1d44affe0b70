// Process-wide logging. Messages are built by the caller (absl::StrCat,
// absl::StrFormat) and passed as one string; the sink is spdlog in full
// builds and plain stderr in compute-only builds (log_spdlog.cc or
// log_stderr.cc, chosen by CMake). Thread-safe; each call writes one line.
#pragma once

#include "absl/strings/string_view.h"

namespace topiary::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Sets the minimum level that is written. Defaults to kInfo.
void SetLevel(Level level);
Level GetLevel();

// Parses "debug", "info", "warn" or "error"; returns false otherwise.
bool ParseLevel(absl::string_view text, Level* level);

void Write(Level level, absl::string_view message);

inline void Debug(absl::string_view m) { Write(Level::kDebug, m); }
inline void Info(absl::string_view m) { Write(Level::kInfo, m); }
inline void Warn(absl::string_view m) { Write(Level::kWarn, m); }
inline void Error(absl::string_view m) { Write(Level::kError, m); }

}  // namespace topiary::log
