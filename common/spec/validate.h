// Validation of a job spec before it is accepted (shared/DESIGN.md §4, §10):
// every error is INVALID_ARGUMENT with the field path first, e.g.
// "spec.stages[2].prune.target.hidden_size: must be positive". Paths must lie
// under one of the storage roots (absolute, no "..", no symlink escape).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "topiary/v1/job.pb.h"

namespace topiary::spec {

struct Limits {
  int max_ranks = 1024;
  int max_retries = 100;
  int max_priority = 100;
};

absl::Status ValidateJobSpec(const v1::JobSpec& spec, const std::vector<std::string>& storage_roots,
                             const Limits& limits = {});

// `path` (the value of `field`) must be absolute, free of ".." components and
// resolve (following every symlink of its existing prefix) to a location
// under one of `roots`. With no roots configured every path is refused.
absl::Status CheckStoragePath(const std::string& path, const std::vector<std::string>& roots,
                              const std::string& field);

}  // namespace topiary::spec
