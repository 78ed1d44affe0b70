// Parsing scores.json (the schema is in scores_json.h) without libtorch, so
// that the parser of this untrusted file can be fuzzed on its own
// (tests/fuzz). ScoresFromJson turns the result into tensors. Pure; thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace topiary::compress {

// The shape of the model the scores must fit.
struct ScoresShape {
  int64_t layers = 0, heads = 0, kv_groups = 0, neurons = 0, channels = 0;
};

// Every matrix row-major; an axis the file does not have is nullopt.
struct ParsedScores {
  std::optional<std::vector<double>> heads;                // layers x heads
  std::optional<std::vector<double>> kv_groups;            // layers x kv_groups
  std::optional<std::vector<double>> neurons;              // layers x neurons
  std::optional<std::vector<double>> channels;             // channels
  std::map<std::string, std::vector<double>> depth;        // metric -> per layer
  std::map<int64_t, std::vector<double>> angular_windows;  // n -> layers - n + 1
};

inline constexpr size_t kMaxScoresBytes = size_t{1} << 30;
inline constexpr int kMaxScoresDepth = 8;
inline constexpr size_t kMaxDepthMetrics = 64;

// INVALID_ARGUMENT "scores.json: <field>: ..." for text that is too large,
// nested too deep, not JSON, of another version, or of another model's shape.
absl::StatusOr<ParsedScores> ParseScoresJson(absl::string_view text, const ScoresShape& shape);

}  // namespace topiary::compress
