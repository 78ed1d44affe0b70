#include "worker/job/model_card.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/spec/spec_io.h"
#include "common/units.h"

namespace topiary::job {
namespace {

using json = nlohmann::json;

json Result(const v1::Assignment& a, const std::string& stage) {
  auto it = a.stage_results().find(stage);
  if (it == a.stage_results().end()) return json::object();
  json j = json::parse(it->second, nullptr, false);
  return j.is_object() ? j : json::object();
}

std::string Num(const json& j, const char* key, const char* format) {
  if (!j.contains(key) || !j[key].is_number()) return "-";
  return absl::StrFormat(format, j[key].get<double>());
}

}  // namespace

std::string ModelCard(const v1::Assignment& a, const Lineage& lineage, const model::ModelConfig& c,
                      const std::string& dtype) {
  const model::ParamCounts p = model::CountParams(c);
  std::string out = absl::StrCat("# ", a.spec().name(), "\n\n", "A smaller model made from `", lineage.original,
                                 "` by structured pruning and knowledge distillation (Minitron-style), "
                                 "exported by Topiary job ",
                                 a.job_id(), ".\n\n");
  absl::StrAppend(&out, "## Shape\n\n| | value |\n| --- | --- |\n");
  absl::StrAppendFormat(&out, "| parameters | %s (%d) |\n", FormatCount(static_cast<double>(p.total())), p.total());
  absl::StrAppendFormat(
      &out, "| hidden size | %d |\n| MLP width | %d |\n| attention heads | %d (KV groups %d, head_dim %d) |\n",
      c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
  absl::StrAppendFormat(&out, "| layers | %d |\n| vocabulary | %d |\n| dtype | %s |\n| isomorphic | %s |\n\n",
                        c.num_hidden_layers, c.vocab_size, dtype, c.IsIsomorphic() ? "yes" : "no (Topiary format)");
  absl::StrAppend(&out, "## How it was made\n\n");
  int64_t tokens = 0;
  for (int i = 0; i < a.stage_index(); ++i) {
    const std::string& name = a.stage_names(i);
    const json r = Result(a, name);
    std::string what = spec::MessageToSpecJson(a.spec().stages(i));
    absl::StrAppend(&out, "- `", name, "`: `", what, "`");
    if (r.contains("tokens") && r["tokens"].is_number_integer() && r.contains("steps")) {
      const int64_t t = r["tokens"].get<int64_t>();
      tokens += t;
      absl::StrAppend(&out, " — ", FormatCount(static_cast<double>(t)), " tokens, final loss ", Num(r, "loss", "%.4f"));
    }
    if (r.contains("best_task")) absl::StrAppend(&out, " — chose probe ", r["best_task"].dump());
    absl::StrAppend(&out, "\n");
  }
  absl::StrAppend(&out, "\nTokens trained on: ", FormatCount(static_cast<double>(tokens)), "\n\n");
  for (int i = a.stage_index() - 1; i >= 0; --i) {
    const json r = Result(a, a.stage_names(i));
    if (!r.contains("models") || !r["models"].is_array()) continue;
    absl::StrAppend(&out, "## Evaluation (stage `", a.stage_names(i), "`)\n\n",
                    "| model | parameters | held-out perplexity | KL to teacher | top-1 agreement |\n",
                    "| --- | --- | --- | --- | --- |\n");
    for (const json& m : r["models"]) {
      absl::StrAppend(&out, "| ", m.value("label", "?"), " | ",
                      FormatCount(m.contains("params") ? m["params"].get<double>() : 0), " | ",
                      Num(m, "perplexity", "%.2f"), " | ", Num(m, "kl_to_teacher", "%.4f"), " | ",
                      Num(m, "top1_agreement", "%.3f"), " |\n");
    }
    absl::StrAppend(&out, "\n");
    break;
  }
  absl::StrAppend(&out, "## The job spec\n\n```json\n", spec::JobSpecToJson(a.spec()), "\n```\n");
  return out;
}

}  // namespace topiary::job
