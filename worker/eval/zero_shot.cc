#include "worker/eval/zero_shot.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace topiary::eval {

absl::StatusOr<std::vector<McExample>> ParseMcTasks(absl::string_view jsonl, int64_t max_examples) {
  std::vector<McExample> out;
  int64_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(jsonl, '\n')) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == absl::string_view::npos) continue;
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("tasks line ", line_no, ": ", what));
    };
    nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
    if (!j.contains("context") || !j["context"].is_string()) return bad("\"context\" must be a string");
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].size() < 2) {
      return bad("\"choices\" must be an array of at least 2 strings");
    }
    McExample e;
    e.context = j["context"].get<std::string>();
    for (const auto& c : j["choices"]) {
      if (!c.is_string() || c.get<std::string>().empty()) return bad("every choice must be a non-empty string");
      e.choices.push_back(c.get<std::string>());
    }
    if (!j.contains("label") || !j["label"].is_number_integer()) return bad("\"label\" must be an integer");
    e.label = j["label"].get<int64_t>();
    if (e.label < 0 || e.label >= static_cast<int64_t>(e.choices.size())) {
      return bad(absl::StrCat("\"label\" ", e.label, " is not the index of a choice"));
    }
    out.push_back(std::move(e));
    if (max_examples > 0 && static_cast<int64_t>(out.size()) >= max_examples) break;
  }
  if (out.empty()) return absl::InvalidArgumentError("tasks: no examples");
  return out;
}

std::vector<double> ChoiceLogLikelihoods(const model::LlamaModel& model, const data::Tokenizer& tok, const McExample& e,
                                         int64_t max_len) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> ctx = tok.Encode(e.context);
  if (ctx.empty()) ctx.push_back(tok.bos_id() >= 0 ? tok.bos_id() : tok.eos_id());
  // All choices of an example in one forward: right-padded rows (causal
  // attention: padding after a row's tokens cannot change its scores).
  std::vector<std::vector<int64_t>> rows;
  std::vector<int64_t> ctx_len, cont_len;
  for (const std::string& choice : e.choices) {
    std::vector<int64_t> cont = tok.Encode(choice);
    if (cont.empty()) cont.push_back(tok.eos_id());
    if (static_cast<int64_t>(cont.size()) >= max_len) cont.resize(max_len - 1);
    const int64_t keep_ctx = std::min<int64_t>(ctx.size(), max_len - static_cast<int64_t>(cont.size()));
    std::vector<int64_t> ids(ctx.end() - keep_ctx, ctx.end());
    ids.insert(ids.end(), cont.begin(), cont.end());
    rows.push_back(std::move(ids));
    ctx_len.push_back(keep_ctx);
    cont_len.push_back(static_cast<int64_t>(cont.size()));
  }
  int64_t T = 0;
  for (const auto& ids : rows) T = std::max<int64_t>(T, static_cast<int64_t>(ids.size()) - 1);
  std::vector<int64_t> flat(rows.size() * T, 0);
  for (size_t c = 0; c < rows.size(); ++c) std::copy(rows[c].begin(), rows[c].end() - 1, flat.begin() + c * T);
  at::Tensor input = at::tensor(flat, at::kLong).view({static_cast<int64_t>(rows.size()), T});      // (C, T)
  at::Tensor logp = at::log_softmax(model::Forward(model, input).to(at::kFloat), -1).contiguous();  // (C, T, V)
  auto lp = logp.accessor<float, 3>();
  std::vector<double> out;
  for (size_t c = 0; c < rows.size(); ++c) {
    double ll = 0;
    for (int64_t i = 0; i < cont_len[c]; ++i) {
      const int64_t pos = ctx_len[c] - 1 + i;  // predicts rows[c][pos + 1]
      ll += lp[c][pos][rows[c][pos + 1]];
    }
    out.push_back(ll);
  }
  return out;
}

absl::StatusOr<McResult> EvaluateMultipleChoice(const model::LlamaModel& model, const data::Tokenizer& tok,
                                                const std::vector<McExample>& examples, int64_t max_len) {
  if (max_len < 2) return absl::InvalidArgumentError("max_len: must be at least 2");
  McResult r;
  for (const McExample& e : examples) {
    std::vector<double> ll = ChoiceLogLikelihoods(model, tok, e, max_len);
    double best = -1e300, best_norm = -1e300;
    int64_t pick = -1, pick_norm = -1;
    for (size_t c = 0; c < ll.size(); ++c) {
      const double norm = ll[c] / static_cast<double>(e.choices[c].size());
      if (ll[c] > best) best = ll[c], pick = static_cast<int64_t>(c);
      if (norm > best_norm) best_norm = norm, pick_norm = static_cast<int64_t>(c);
    }
    r.acc += pick == e.label;
    r.acc_norm += pick_norm == e.label;
    ++r.examples;
  }
  r.acc /= static_cast<double>(r.examples);
  r.acc_norm /= static_cast<double>(r.examples);
  return r;
}

}  // namespace topiary::eval
