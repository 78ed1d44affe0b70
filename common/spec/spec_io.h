// Job specs as people write them (YAML or JSON, shared/DESIGN.md §4) and as
// the API carries them (topiary.v1.JobSpec). Parsing is guided by the proto
// descriptor, so `tokens: 100M` and `params: 4.5e9` land in their string
// fields, and an unknown or misspelt key is an error naming its path.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "topiary/v1/job.pb.h"

namespace topiary::spec {

// YAML (a superset of JSON) to a JobSpec. INVALID_ARGUMENT naming the path,
// e.g. "spec.stages[1].prune.target.hiden_size: unknown field".
absl::StatusOr<v1::JobSpec> ParseJobSpec(absl::string_view text);

// The spec as JSON (field names as in the YAML, defaults omitted).
std::string JobSpecToJson(const v1::JobSpec& spec);

}  // namespace topiary::spec
