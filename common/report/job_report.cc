#include "common/report/job_report.h"

#include <cmath>
#include <filesystem>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "common/file_util.h"
#include "common/json_bounds.h"
#include "common/report/svg_chart.h"
#include "common/spec/spec_io.h"
#include "common/spec/stages.h"
#include "common/units.h"

namespace topiary::report {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// A JSON file of a stage, bounded; null when absent or unreadable.
json ReadJson(const std::string& path, size_t max_bytes = 1 << 20) {
  absl::StatusOr<std::string> text = ReadFileToString(path, max_bytes);
  if (!text.ok() || !CheckJsonBounds(*text, max_bytes, 32, path).ok()) return json();
  json j = json::parse(*text, nullptr, false);
  return j.is_discarded() ? json() : j;
}

json Parse(const std::string& text) {
  if (text.empty() || !CheckJsonBounds(text, 1 << 20, 32, "result").ok()) return json();
  json j = json::parse(text, nullptr, false);
  return j.is_discarded() ? json() : j;
}

int64_t DirBytes(const std::string& dir) {
  int64_t bytes = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) bytes += static_cast<int64_t>(e.file_size(ec));
  }
  return bytes;
}

json ModelConfig(const json& c) {
  json out = json::object();
  for (const char* k : {"hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                        "num_hidden_layers", "vocab_size"}) {
    if (c.contains(k)) out[k] = c[k];
  }
  return out;
}

// The analytic parameter count of a Llama config.json (as worker/model counts them).
int64_t CountParams(const json& c) {
  auto get = [&](const char* k, int64_t d = 0) { return c.contains(k) && c[k].is_number() ? c[k].get<int64_t>() : d; };
  const int64_t C = get("hidden_size"), FF = get("intermediate_size"), NH = get("num_attention_heads"),
                G = get("num_key_value_heads", NH), L = get("num_hidden_layers"), V = get("vocab_size");
  const int64_t HS = get("head_dim", NH > 0 ? C / NH : 0);
  const bool tied = c.contains("tie_word_embeddings") && c["tie_word_embeddings"].is_boolean() &&
                    c["tie_word_embeddings"].get<bool>();
  auto flag = [&](const char* k) { return c.contains(k) && c[k].is_boolean() && c[k].get<bool>(); };
  const bool qwen2 = c.value("model_type", "") == "qwen2";
  int64_t attn = C * NH * HS * 2 + C * G * HS * 2, mlp = 3 * C * FF;
  if (qwen2 || flag("attention_bias")) attn += NH * HS + 2 * G * HS;  // q/k/v biases
  if (flag("attention_bias")) attn += C;
  if (flag("mlp_bias")) mlp += 2 * FF + C;
  return V * C * (tied ? 1 : 2) + L * (attn + mlp + 2 * C) + C;
}

json Teacher(const v1::Job& job) {
  const std::string path = job.spec().teacher().path();
  json config = ReadJson(path + "/config.json");
  json t = {{"path", path}};
  if (config.is_object()) {
    t["config"] = ModelConfig(config);
    t["params"] = CountParams(config);
    t["dtype"] = config.value("torch_dtype", "bfloat16");
  }
  t["bytes"] = DirBytes(path);
  return t;
}

std::vector<double> RowMeans(const json& matrix) {
  std::vector<double> out;
  if (!matrix.is_array()) return out;
  for (const json& row : matrix) {
    double s = 0;
    size_t n = 0;
    if (!row.is_array()) continue;
    for (const json& v : row) {
      if (v.is_number()) s += v.get<double>(), ++n;
    }
    out.push_back(n > 0 ? s / n : 0);
  }
  return out;
}

json Importance(const std::string& stage_dir, const std::string& name) {
  json s = ReadJson(stage_dir + "/scores.json", size_t{256} << 20);
  if (!s.is_object()) return json();
  json out = {{"stage", name}, {"depth", json::object()}, {"width", json::object()}};
  if (s.contains("depth") && s["depth"].is_object()) {
    for (const auto& [metric, v] : s["depth"].items()) {
      if (v.is_array()) out["depth"][metric] = v;
    }
  }
  if (s.contains("width") && s["width"].is_object()) {
    for (const char* k : {"heads", "kv_groups", "neurons"}) {
      if (s["width"].contains(k)) out["width"][k] = RowMeans(s["width"][k]);
    }
  }
  return out;
}

json Search(const v1::Stage& stage, const std::string& stage_dir) {
  json fan_in = Parse(stage.result_json());
  const int best = fan_in.is_object() && fan_in.contains("best_task") ? fan_in["best_task"].get<int>() : -1;
  json out = {{"stage", stage.name()}, {"best", best}, {"candidates", json::array()}};
  for (int i = 0; i < stage.tasks_size(); ++i) {
    json r = Parse(stage.tasks(i).result_json());
    if (!r.is_object()) r = ReadJson(absl::StrCat(stage_dir, "/probe-", i, "/result.json"));
    if (!r.is_object() || r.value("skipped", false)) continue;
    json c = {{"index", i}, {"winner", i == best}};
    for (const char* k : {"config", "params", "zero_shot_loss", "distilled_loss", "loss"}) {
      if (r.contains(k)) c[k] = r[k];
    }
    out["candidates"].push_back(c);
  }
  return out;
}

json Training(const v1::Stage& stage, const std::string& job_dir, const char* kind) {
  std::string log = job_dir + "/" + stage.name() + "/train_log.jsonl";
  if (!fs::exists(log)) log = job_dir + "/.work/" + stage.name() + "/train_log.jsonl";  // unfinished
  absl::StatusOr<std::string> text = ReadFileToString(log, size_t{256} << 20);
  if (!text.ok()) return json();
  json t = {{"stage", stage.name()},      {"kind", kind},
            {"step", json::array()},      {"loss", json::array()},
            {"eval_step", json::array()}, {"eval_loss", json::array()}};
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > 4096) continue;
    json j = json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("step") || !j.contains("loss")) continue;
    t["step"].push_back(j["step"]);
    t["loss"].push_back(j["loss"]);
    if (j.contains("eval_loss")) t["eval_step"].push_back(j["step"]), t["eval_loss"].push_back(j["eval_loss"]);
    if (j.contains("tokens")) t["tokens"] = j["tokens"];
    if (j.contains("tokens_per_second")) t["tokens_per_second"] = j["tokens_per_second"];
  }
  return t["step"].empty() ? json() : t;
}

double Seconds(int64_t from, int64_t to) { return from > 0 && to >= from ? (to - from) / 1e6 : 0; }

std::string Time(int64_t micros) {
  return micros > 0 ? absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixMicros(micros), absl::UTCTimeZone()) : "";
}

}  // namespace

std::string FormatLoss(double v) { return absl::StrFormat("%.4f", v); }
std::string FormatPerplexity(double v) { return absl::StrFormat("%.2f", v); }
std::string FormatParams(double v) { return FormatCount(v); }
std::string FormatSeconds(double v) { return absl::StrFormat("%.1f s", v); }

json BuildReport(const v1::Job& job, const std::string& job_dir) {
  json r = {{"version", kReportVersion}};
  r["job"] = {{"id", job.id()},
              {"name", job.spec().name()},
              {"owner", job.owner()},
              {"state", v1::JobState_Name(job.state())},
              {"error", job.error()},
              {"created", Time(job.create_time_micros())},
              {"updated", Time(job.update_time_micros())},
              {"seconds", Seconds(job.create_time_micros(), job.update_time_micros())}};
  json spec = json::parse(spec::JobSpecToJson(job.spec()), nullptr, false);
  r["spec"] = spec.is_discarded() ? json::object() : spec;
  r["teacher"] = Teacher(job);
  r["stages"] = json::array();
  r["training"] = json::array();
  for (int i = 0; i < job.stages_size() && i < job.spec().stages_size(); ++i) {
    const v1::Stage& s = job.stages(i);
    const v1::StageSpec& spec_stage = job.spec().stages(i);
    const std::string dir = job_dir + "/" + s.name();
    json st = {{"name", s.name()},
               {"kind", spec::StageKindName(spec_stage)},
               {"state", v1::StageState_Name(s.state())},
               {"seconds", Seconds(s.start_time_micros(), s.end_time_micros())}};
    int attempts = 0;
    std::string error;
    for (const v1::Task& t : s.tasks()) {
      attempts = std::max(attempts, t.attempt());
      if (!t.error().empty()) error = t.error();
    }
    st["attempts"] = attempts;
    if (!error.empty()) st["error"] = error;
    r["stages"].push_back(st);
    if (s.state() == v1::STAGE_FAILED && !r.contains("failed_stage")) {
      r["failed_stage"] = {{"name", s.name()}, {"error", error.empty() ? job.error() : error}};
    }
    const json result = Parse(s.result_json());
    switch (spec_stage.kind_case()) {
      case v1::StageSpec::kImportance:
        if (json imp = Importance(dir, s.name()); !imp.is_null()) r["importance"] = imp;
        break;
      case v1::StageSpec::kPrune:
        if (spec_stage.prune().has_search() && s.tasks_size() > 0) r["search"] = Search(s, dir);
        break;
      case v1::StageSpec::kTeacherCorrection:
      case v1::StageSpec::kDistill:
      case v1::StageSpec::kStreamline:
        if (json t = Training(s, job_dir, spec::StageKindName(spec_stage)); !t.is_null()) r["training"].push_back(t);
        break;
      case v1::StageSpec::kEvaluate:
        if (result.is_object() && result.contains("models")) {
          json models = json::array();
          for (const json& m : result["models"]) {
            json e = {{"label", m.value("label", "")}, {"params", m.value("params", 0)}};
            for (const char* k : {"perplexity", "loss", "kl_to_teacher", "top1_agreement", "tasks"}) {
              if (m.contains(k)) e[k] = m[k];
            }
            models.push_back(e);
          }
          r["evaluation"] = {{"stage", s.name()}, {"models", models}};
          if (result.contains("sample")) r["sample"] = result["sample"];
        }
        break;
      default:
        break;
    }
    // The newest model a stage produced is the job's result so far.
    if (result.is_object() && result.contains("config") && result["config"].is_object()) {
      const std::string path = result.value("output_path", result.value("model", ""));
      json res = {{"path", path}, {"config", result["config"]}};
      if (result["config"].contains("params")) res["params"] = result["config"]["params"];
      if (result.contains("dtype")) res["dtype"] = result["dtype"];
      res["bytes"] = result.contains("bytes") ? result["bytes"].get<int64_t>() : DirBytes(path);
      r["result"] = res;
    } else if (spec_stage.has_prune() && spec_stage.prune().has_search() && r.contains("search")) {
      for (const json& c : r["search"]["candidates"]) {
        if (!c.value("winner", false)) continue;
        const std::string path = absl::StrCat(dir, "/probe-", c["index"].get<int>(), "/model");
        r["result"] = {{"path", path},
                       {"config", c.value("config", json::object())},
                       {"params", c.value("params", 0)},
                       {"bytes", DirBytes(path)}};
      }
    }
  }
  return r;
}

}  // namespace topiary::report
