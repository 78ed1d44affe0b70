#include "worker/agent/rank_protocol.h"

#include "absl/strings/str_cat.h"
#include "common/json_bounds.h"

namespace topiary::agent {
namespace {

using json = nlohmann::json;

json ProgressJson(const v1::Progress& p) {
  return {{"phase", p.phase()},
          {"step", p.step()},
          {"total_steps", p.total_steps()},
          {"tokens", p.tokens()},
          {"loss", p.loss()},
          {"tokens_per_second", p.tokens_per_second()},
          {"mfu", p.mfu()},
          {"eta_seconds", p.eta_seconds()}};
}

template <typename T>
T Get(const json& j, const char* key, T fallback) {
  if (!j.contains(key)) return fallback;
  const json& v = j[key];
  if constexpr (std::is_same_v<T, std::string>) {
    return v.is_string() ? v.get<std::string>() : fallback;
  } else {
    return v.is_number() ? v.get<T>() : fallback;
  }
}

}  // namespace

std::string ProgressLine(const v1::Progress& p, bool milestone) {
  return json{{"type", "progress"}, {"progress", ProgressJson(p)}, {"milestone", milestone}}.dump() + "\n";
}

std::string ResultLine(const json& result) { return json{{"type", "result"}, {"result", result}}.dump() + "\n"; }

std::string ErrorLine(const std::string& message, const std::string& failure) {
  return json{{"type", "error"}, {"message", message}, {"failure", failure}}.dump() + "\n";
}

absl::StatusOr<RankMessage> ParseRankLine(const std::string& line) {
  if (absl::Status st = CheckJsonBounds(line, 1 << 20, 40, "rank line"); !st.ok()) return st;
  json j = json::parse(line, nullptr, false);
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("rank line is not a message: ", line.substr(0, 200)));
  }
  RankMessage m;
  const std::string type = j["type"];
  if (type == "progress") {
    const json p = j.contains("progress") && j["progress"].is_object() ? j["progress"] : json::object();
    m.progress.set_phase(Get<std::string>(p, "phase", "").substr(0, 64));
    m.progress.set_step(Get<int64_t>(p, "step", 0));
    m.progress.set_total_steps(Get<int64_t>(p, "total_steps", 0));
    m.progress.set_tokens(Get<int64_t>(p, "tokens", 0));
    m.progress.set_loss(Get<double>(p, "loss", 0));
    m.progress.set_tokens_per_second(Get<double>(p, "tokens_per_second", 0));
    m.progress.set_mfu(Get<double>(p, "mfu", 0));
    m.progress.set_eta_seconds(Get<double>(p, "eta_seconds", 0));
    m.milestone = j.contains("milestone") && j["milestone"].is_boolean() && j["milestone"].get<bool>();
  } else if (type == "result") {
    m.type = RankMessage::Type::kResult;
    m.result = j.contains("result") ? j["result"] : json::object();
  } else if (type == "error") {
    m.type = RankMessage::Type::kError;
    m.message = Get<std::string>(j, "message", "failed without a message");
    m.failure = Get<std::string>(j, "failure", "task");
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown rank message type '", type.substr(0, 32), "'"));
  }
  return m;
}

}  // namespace topiary::agent
