#include "worker/compress/importance/scores_json.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/compress/importance/scores_parse.h"

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

at::Tensor ToTensor(const std::vector<double>& v, std::vector<int64_t> shape) {
  return at::tensor(v, at::kDouble).view(shape).clone();
}

}  // namespace

std::string ScoresToJson(const model::ModelConfig& c, const ImportanceResult& r, const ScoresProvenance& p) {
  json j;
  j["version"] = kScoresVersion;
  j["model"] = {{"path", p.model_path}, {"config", json::parse(model::ConfigToJson(c))}};
  j["calibration"] = {{"data", p.data_path},
                      {"samples", r.sequences},
                      {"seq_len", p.options.seq_len},
                      {"seed", p.options.seed},
                      {"tokens", r.tokens}};
  j["aggregation"] = {
      {"batch", AggName(p.options.agg.batch)},
      {"seq", AggName(p.options.agg.seq)},
      {"mlp_activation", p.options.mlp == MlpActivation::kDownProjInput ? "down_proj_input" : "gate_proj_output"}};
  j["width"] = {{"heads", Matrix(r.scores.heads)},
                {"kv_groups", Matrix(r.scores.kv_groups)},
                {"neurons", Matrix(r.scores.neurons)},
                {"channels", Matrix(r.scores.channels)},
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
  const ScoresShape shape{c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size,
                          c.hidden_size};
  ASSIGN_OR_RETURN(ParsedScores p, ParseScoresJson(text, shape));
  Scores s;
  const int64_t L = c.num_hidden_layers;
  if (p.heads) s.heads = ToTensor(*p.heads, {L, shape.heads});
  if (p.kv_groups) s.kv_groups = ToTensor(*p.kv_groups, {L, shape.kv_groups});
  if (p.neurons) s.neurons = ToTensor(*p.neurons, {L, shape.neurons});
  if (p.channels) s.channels = ToTensor(*p.channels, {shape.channels});
  s.depth = std::move(p.depth);
  s.angular_windows = std::move(p.angular_windows);
  return s;
}

}  // namespace topiary::compress
