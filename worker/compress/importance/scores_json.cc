#include "worker/compress/importance/scores_json.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace topiary::compress {
namespace {

using json = nlohmann::json;

json Matrix(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous();
  json out = json::array();
  if (d.dim() == 1) {
    for (int64_t i = 0; i < d.size(0); ++i) out.push_back(d[i].item<double>());
    return out;
  }
  for (int64_t i = 0; i < d.size(0); ++i) out.push_back(Matrix(d[i]));
  return out;
}

// Reads a numeric list (1-D) or list of lists (2-D) of the expected shape.
absl::StatusOr<at::Tensor> ReadMatrix(const json& j, const char* field, std::vector<int64_t> shape) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("scores.json: ", field, ": ", what));
  };
  if (!j.is_array()) return bad("must be a list");
  std::vector<double> flat;
  if (shape.size() == 1) {
    if (static_cast<int64_t>(j.size()) != shape[0]) return bad(absl::StrCat("has ", j.size(), " entries, the model needs ", shape[0]));
    for (const auto& v : j) {
      if (!v.is_number()) return bad("entries must be numbers");
      flat.push_back(v.get<double>());
    }
  } else {
    if (static_cast<int64_t>(j.size()) != shape[0]) return bad(absl::StrCat("has ", j.size(), " rows, the model needs ", shape[0]));
    for (const auto& row : j) {
      if (!row.is_array() || static_cast<int64_t>(row.size()) != shape[1]) {
        return bad(absl::StrCat("every row must have ", shape[1], " entries"));
      }
      for (const auto& v : row) {
        if (!v.is_number()) return bad("entries must be numbers");
        flat.push_back(v.get<double>());
      }
    }
  }
  return at::tensor(flat, at::kDouble).view(shape).clone();
}

}  // namespace

std::string ScoresToJson(const model::ModelConfig& c, const ImportanceResult& r, const ScoresProvenance& p) {
  json j;
  j["version"] = kScoresVersion;
  j["model"] = {{"path", p.model_path}, {"config", json::parse(model::ConfigToJson(c))}};
  j["calibration"] = {{"data", p.data_path}, {"samples", r.sequences}, {"seq_len", p.options.seq_len},
                      {"seed", p.options.seed}, {"tokens", r.tokens}};
  j["aggregation"] = {{"batch", AggName(p.options.agg.batch)}, {"seq", AggName(p.options.agg.seq)},
                      {"mlp_activation", p.options.mlp == MlpActivation::kDownProjInput ? "down_proj_input" : "gate_proj_output"}};
  j["width"] = {{"heads", Matrix(r.scores.heads)}, {"kv_groups", Matrix(r.scores.kv_groups)},
                {"neurons", Matrix(r.scores.neurons)}, {"channels", Matrix(r.scores.channels)},
                {"channels_per_norm", Matrix(r.channels_per_norm)}};
  json depth = json::object();
  for (const auto& [name, v] : r.scores.depth) depth[name] = v;
  json windows = json::object();
  for (size_t n = 0; n < r.angular_windows.size(); ++n) windows[std::to_string(n + 1)] = r.angular_windows[n];
  depth["angular_distance_windows"] = windows;
  j["depth"] = depth;
  return j.dump(1) + "\n";
}

absl::StatusOr<Scores> ScoresFromJson(const std::string& text, const model::ModelConfig& c) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("scores.json: not a JSON object");
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"].get<int>() != kScoresVersion) {
    return absl::InvalidArgumentError(absl::StrCat("scores.json: version must be ", kScoresVersion));
  }
  if (!j.contains("width") || !j["width"].is_object()) return absl::InvalidArgumentError("scores.json: width: missing");
  const json& w = j["width"];
  const int64_t L = c.num_hidden_layers;
  Scores s;
  auto read = [&](const char* key, std::vector<int64_t> shape, at::Tensor* out) -> absl::Status {
    if (!w.contains(key)) return absl::OkStatus();  // optional: only needed for that axis
    auto m = ReadMatrix(w[key], (std::string("width.") + key).c_str(), shape);
    if (!m.ok()) return m.status();
    *out = *m;
    return absl::OkStatus();
  };
  if (auto st = read("heads", {L, c.num_attention_heads}, &s.heads); !st.ok()) return st;
  if (auto st = read("kv_groups", {L, c.num_key_value_heads}, &s.kv_groups); !st.ok()) return st;
  if (auto st = read("neurons", {L, c.intermediate_size}, &s.neurons); !st.ok()) return st;
  if (auto st = read("channels", {c.hidden_size}, &s.channels); !st.ok()) return st;
  if (j.contains("depth") && j["depth"].is_object()) {
    const json& windows = j["depth"].contains("angular_distance_windows") ? j["depth"]["angular_distance_windows"]
                                                                            : json();
    if (windows.is_object()) {  // {"n": [distance of the window of n blocks starting at each layer]}
      for (auto it = windows.begin(); it != windows.end(); ++it) {
        int64_t n = 0;
        if (!absl::SimpleAtoi(it.key(), &n) || n < 1 || n > L || !it.value().is_array()) continue;
        auto m = ReadMatrix(it.value(), "depth.angular_distance_windows", {L - n + 1});
        if (!m.ok()) return m.status();
        s.angular_windows[n] = std::vector<double>(m->data_ptr<double>(), m->data_ptr<double>() + (L - n + 1));
      }
    }
    for (auto it = j["depth"].begin(); it != j["depth"].end(); ++it) {
      if (!it.value().is_array()) continue;  // angular_distance_windows is an object
      auto m = ReadMatrix(it.value(), ("depth." + it.key()).c_str(), {L});
      if (!m.ok()) return m.status();
      std::vector<double> v(m->data_ptr<double>(), m->data_ptr<double>() + L);
      s.depth[it.key()] = v;
    }
  }
  return s;
}

}  // namespace topiary::compress
