// Small filesystem helpers shared by every component. All functions are
// thread-compatible, block on I/O, and report failures as absl::Status with
// the path in the message.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace topiary {

// Reads a whole file. Refuses files larger than `max_bytes`.
absl::StatusOr<std::string> ReadFileToString(const std::string& path, size_t max_bytes = size_t{1} << 30);

// Writes `contents` to `path` atomically: a temporary file in the same
// directory is written, fsynced, then renamed over `path`, and the directory
// is fsynced. A crash leaves either the old or the new file, never a torn one.
// With durable = false the fsyncs are skipped: the rename is still atomic,
// but the contents may be lost in a machine crash.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents, bool durable = true);

// Creates `path` and its parents (like mkdir -p).
absl::Status MakeDirs(const std::string& path);

// Creates a fresh directory under $TMPDIR (or /tmp) named prefix-XXXXXX.
absl::StatusOr<std::string> MakeTempDir(absl::string_view prefix);

// Removes a file or a directory tree; a missing path is not an error.
absl::Status RemoveAll(const std::string& path);

}  // namespace topiary
