// The storage-path policy (docs/design.md, "Storage"): every path a job
// names, and every path a worker opens for it, must resolve under one of the
// configured storage roots. Resolution follows every symbolic link of the
// path, dangling ones included (a link to a missing file is judged by where
// it points), and appends the part that does not exist yet as written.
// Linear in the path's length; paths longer than kMaxPathBytes, relative
// paths, ".." components and more than 40 links are refused. Thread-safe;
// reads the filesystem (lstat, readlink) but never changes it.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace topiary {

inline constexpr size_t kMaxPathBytes = 4096;

// The absolute path `path` names once every symlink is followed.
absl::StatusOr<std::string> ResolvePath(const std::string& path);

// INVALID_ARGUMENT "<field>: ..." unless `path` (the value of `field`) is
// absolute, has no ".." and resolves to one of `roots` or below. With no
// roots every path is refused.
absl::Status CheckStoragePath(const std::string& path, const std::vector<std::string>& roots, const std::string& field);

}  // namespace topiary
