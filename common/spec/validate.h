// Validation of a job spec before it is accepted (docs/design.md, "Jobs"):
// every error is INVALID_ARGUMENT with the field path first, e.g.
// "spec.stages[2].prune.target.hidden_size: must be positive". Everything a
// user sends is bounded here (counts, lengths, finite numbers, known enum
// values and metric names), and every path must lie under one of the
// storage roots (absolute, no "..", no symlink escape: common/storage_path.h).
// Thread-safe; reads the filesystem only to resolve paths.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/storage_path.h"
#include "topiary/v1/job.pb.h"

namespace topiary::spec {

struct Limits {
  int max_ranks = 1024;
  int max_slots_per_rank = 64;
  int max_retries = 100;
  int max_priority = 100;
  int max_stages = 32;
  int max_labels = 64;
  int max_list = 64;  // entries of any list (depth metrics, tasks, drop lists, LoRA targets, hidden pairs)
  size_t max_spec_bytes = 1 << 20;  // the whole spec, serialized
};

absl::Status ValidateJobSpec(const v1::JobSpec& spec, const std::vector<std::string>& storage_roots,
                             const Limits& limits = {});

}  // namespace topiary::spec
