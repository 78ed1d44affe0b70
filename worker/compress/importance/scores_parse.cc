#include "worker/compress/importance/scores_parse.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/json_bounds.h"
#include "common/status_macros.h"

namespace topiary::compress {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("scores.json: ", field, ": ", what));
}

absl::Status ReadNumber(const json& v, absl::string_view field, std::vector<double>* out) {
  if (!v.is_number()) return Bad(field, "entries must be numbers");
  const double d = v.get<double>();
  if (!std::isfinite(d)) return Bad(field, "entries must be finite");
  out->push_back(d);
  return absl::OkStatus();
}

// A list of `rows` numbers (cols == 0) or a list of `rows` lists of `cols`.
absl::StatusOr<std::vector<double>> ReadMatrix(const json& j, absl::string_view field, int64_t rows, int64_t cols) {
  if (!j.is_array()) return Bad(field, "must be a list");
  if (static_cast<int64_t>(j.size()) != rows) {
    return Bad(field, absl::StrCat("has ", j.size(), cols == 0 ? " entries" : " rows", ", the model needs ", rows));
  }
  std::vector<double> flat;
  flat.reserve(static_cast<size_t>(rows * std::max<int64_t>(cols, 1)));
  for (const json& row : j) {
    if (cols == 0) {
      RETURN_IF_ERROR(ReadNumber(row, field, &flat));
      continue;
    }
    if (!row.is_array() || static_cast<int64_t>(row.size()) != cols) {
      return Bad(field, absl::StrCat("every row must have ", cols, " entries"));
    }
    for (const json& v : row) RETURN_IF_ERROR(ReadNumber(v, field, &flat));
  }
  return flat;
}

}  // namespace

absl::StatusOr<ParsedScores> ParseScoresJson(absl::string_view text, const ScoresShape& shape) {
  RETURN_IF_ERROR(CheckJsonBounds(text, kMaxScoresBytes, kMaxScoresDepth, "scores.json"));
  const json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("scores.json: not a JSON object");
  const auto version = j.find("version");
  if (version == j.end() || !version->is_number_integer() || version->get<int64_t>() != 1) {
    return Bad("version", "must be 1");
  }
  const auto width = j.find("width");
  if (width == j.end() || !width->is_object()) return Bad("width", "missing");
  const int64_t L = shape.layers;
  ParsedScores s;
  auto read = [&](const char* key, int64_t rows, int64_t cols,
                  std::optional<std::vector<double>>* out) -> absl::Status {
    const auto it = width->find(key);
    if (it == width->end()) return absl::OkStatus();  // optional: only needed for that axis
    ASSIGN_OR_RETURN(std::vector<double> m, ReadMatrix(*it, absl::StrCat("width.", key), rows, cols));
    *out = std::move(m);
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(read("heads", L, shape.heads, &s.heads));
  RETURN_IF_ERROR(read("kv_groups", L, shape.kv_groups, &s.kv_groups));
  RETURN_IF_ERROR(read("neurons", L, shape.neurons, &s.neurons));
  RETURN_IF_ERROR(read("channels", shape.channels, 0, &s.channels));
  const auto depth = j.find("depth");
  if (depth == j.end() || !depth->is_object()) return s;
  if (depth->size() > kMaxDepthMetrics + 1)
    return Bad("depth", absl::StrCat("more than ", kMaxDepthMetrics, " metrics"));
  const auto windows = depth->find("angular_distance_windows");
  if (windows != depth->end() && windows->is_object()) {  // {"n": [distance of the window of n blocks at each layer]}
    for (auto it = windows->begin(); it != windows->end(); ++it) {
      int64_t n = 0;
      if (!absl::SimpleAtoi(it.key(), &n) || n < 1 || n > L || !it.value().is_array()) continue;
      ASSIGN_OR_RETURN(s.angular_windows[n], ReadMatrix(it.value(), "depth.angular_distance_windows", L - n + 1, 0));
    }
  }
  for (auto it = depth->begin(); it != depth->end(); ++it) {
    if (!it.value().is_array()) continue;  // angular_distance_windows is an object
    ASSIGN_OR_RETURN(s.depth[it.key()], ReadMatrix(it.value(), absl::StrCat("depth.", it.key()), L, 0));
  }
  return s;
}

}  // namespace topiary::compress
