// Job specs as people write them (YAML or JSON, docs/design.md, "Jobs") and as
// the API carries them (topiary.v1.JobSpec). Parsing is guided by the proto
// descriptor, so `tokens: 100M` and `params: 4.5e9` land in their string
// fields, and an unknown or misspelt key is an error naming its path.
#pragma once

#include <string>

#include <google/protobuf/descriptor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "topiary/v1/job.pb.h"

namespace topiary::spec {

// Enum values as specs write them: the value name without its type's prefix,
// in lower case (DATA_FORMAT_U16 -> "u16", AGGREGATION_L2 -> "l2").
std::string EnumValueShortName(const google::protobuf::EnumValueDescriptor* value);
// The value of `e` with that short name (or full name); dtypes also take
// bf16, fp16 and fp32. Null when none; the UNSPECIFIED value is never found.
const google::protobuf::EnumValueDescriptor* FindEnumValueByShortName(const google::protobuf::EnumDescriptor* e,
                                                                      absl::string_view name);
template <typename Enum>
std::string EnumShortName(Enum value) {
  const auto* d = google::protobuf::GetEnumDescriptor<Enum>()->FindValueByNumber(static_cast<int>(value));
  return d == nullptr ? "unspecified" : EnumValueShortName(d);
}

// Any message of the spec as JSON with enums by their short names (what a
// YAML spec would say), field names as in the proto, defaults omitted.
std::string MessageToSpecJson(const google::protobuf::Message& message);

inline constexpr size_t kMaxSpecTextBytes = size_t{1} << 20;
inline constexpr int kMaxSpecNesting = 64;  // brackets and braces of flow collections

// YAML (a superset of JSON) to a JobSpec. INVALID_ARGUMENT naming the path,
// e.g. "spec.stages[1].prune.target.hiden_size: unknown field". Text larger
// than kMaxSpecTextBytes, nested deeper than kMaxSpecNesting or holding more
// than 100,000 values (YAML aliases counted at each use) is refused.
absl::StatusOr<v1::JobSpec> ParseJobSpec(absl::string_view text);

// Makes every relative path of the spec (teacher, data, tokenizers, task
// files, export) absolute against `base_dir` (a spec file's directory).
void ResolveRelativePaths(v1::JobSpec* spec, const std::string& base_dir);

// The spec as JSON (field names and enum names as in the YAML, defaults omitted).
std::string JobSpecToJson(const v1::JobSpec& spec);

}  // namespace topiary::spec
