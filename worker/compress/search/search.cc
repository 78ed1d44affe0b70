#include "worker/compress/search/search.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace topiary::compress {
namespace {

absl::Status Bad(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("search.", field, ": ", what));
}

// Multiples of `divisor` in [ceil(min_frac * n), n], plus n itself.
std::vector<int64_t> Grid(int64_t n, double min_frac, int64_t divisor) {
  std::vector<int64_t> out;
  const int64_t lo = static_cast<int64_t>(std::ceil(min_frac * static_cast<double>(n) - 1e-9));
  for (int64_t v = ((lo + divisor - 1) / divisor) * divisor; v < n; v += divisor) {
    if (v > 0) out.push_back(v);
  }
  out.push_back(n);
  return out;
}

}  // namespace

absl::Status ValidateSearchSpace(const model::ModelConfig& c, const SearchSpace& s) {
  if (s.budget <= 0) return Bad("params", "the budget must be positive");
  if (s.budget > model::CountParams(c).total()) {
    return Bad("params", absl::StrCat(s.budget, " exceeds the model's ", model::CountParams(c).total()));
  }
  if (!(s.tolerance > 0 && s.tolerance < 1)) return Bad("tolerance", "must be in (0, 1)");
  if (!(s.min_depth > 0 && s.min_depth <= 1)) return Bad("min_depth", "must be in (0, 1]");
  if (!(s.min_width > 0 && s.min_width <= 1)) return Bad("min_width", "must be in (0, 1]");
  if (s.hidden_divisor < 1) return Bad("hidden_divisor", "must be at least 1");
  if (s.ffn_divisor < 1) return Bad("ffn_divisor", "must be at least 1");
  if (s.max_candidates < 1) return Bad("max_candidates", "must be at least 1");
  if (!c.IsIsomorphic()) return Bad("model", "search needs an isomorphic model");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Candidate>> EnumerateCandidates(const model::ModelConfig& c, const SearchSpace& s) {
  RETURN_IF_ERROR(ValidateSearchSpace(c, s));
  const int64_t R = c.q_per_group();
  std::vector<Candidate> out;
  for (int64_t C : Grid(c.hidden_size, s.min_width, s.hidden_divisor)) {
    for (int64_t FF : Grid(c.intermediate_size, s.min_width, s.ffn_divisor)) {
      for (int64_t G : Grid(c.num_key_value_heads, s.min_width, 1)) {
        for (int64_t r = 1; r <= R; ++r) {
          const int64_t NH = G * r;
          if (NH < s.min_width * c.num_attention_heads - 1e-9) continue;
          for (int64_t L : Grid(c.num_hidden_layers, s.min_depth, 1)) {
            Candidate k;
            k.config = c;
            k.config.hidden_size = C;
            k.config.intermediate_size = FF;
            k.config.num_attention_heads = NH;
            k.config.num_key_value_heads = G;
            k.config.num_hidden_layers = L;
            k.params = model::CountParams(k.config).total();
            if (std::abs(static_cast<double>(k.params - s.budget)) > s.tolerance * static_cast<double>(s.budget)) {
              continue;
            }
            k.target.hidden_size = C;
            k.target.intermediate_size = FF;
            k.target.num_attention_heads = NH;
            k.target.num_key_value_heads = G;
            k.target.num_hidden_layers = L;
            k.target.depth_metric = s.depth_metric;
            out.push_back(std::move(k));
          }
        }
      }
    }
  }
  if (out.empty()) {
    return Bad("params", absl::StrCat("no shape of the grid lies within ", s.tolerance * 100, "% of ", s.budget,
                                      " parameters (widen tolerance or lower min_width/min_depth)"));
  }
  std::stable_sort(out.begin(), out.end(), [&](const Candidate& a, const Candidate& b) {
    return std::abs(a.params - s.budget) < std::abs(b.params - s.budget);
  });
  if (static_cast<int64_t>(out.size()) > s.max_candidates) out.resize(s.max_candidates);
  return out;
}

absl::StatusOr<std::vector<Candidate>> RankCandidates(const model::LlamaModel& m, const Scores& scores,
                                                      std::vector<Candidate> candidates, const data::TokenFile& heldout,
                                                      const eval::EvalOptions& eo, const std::string& depth_metric) {
  for (Candidate& k : candidates) {
    k.target.depth_metric = depth_metric;
    ASSIGN_OR_RETURN(PrunePlan plan, MakePlan(m.config, scores, k.target));
    model::LlamaModel pruned = ApplyPlan(m, plan);
    int64_t real = 0;
    for (auto& [name, t] : pruned.NamedParameters()) real += t->numel();
    if (real != k.params) {
      return absl::InternalError(
          absl::StrCat("search: analytic count ", k.params, " but the pruned model has ", real, " parameters"));
    }
    ASSIGN_OR_RETURN(eval::LossResult r, eval::EvaluateLoss(pruned, heldout, {0, heldout.size()}, eo));
    k.loss = r.loss;
    k.perplexity = r.perplexity;
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.loss < b.loss; });
  return candidates;
}

std::string FormatTable(const model::ModelConfig& original, const std::vector<Candidate>& ranked) {
  const double total = static_cast<double>(model::CountParams(original).total());
  std::string out = absl::StrFormat("%4s %7s %7s %5s %3s %6s %11s %6s %8s %9s\n", "rank", "hidden", "ffn", "heads",
                                    "kv", "layers", "params", "share", "loss", "ppl");
  for (size_t i = 0; i < ranked.size(); ++i) {
    const Candidate& k = ranked[i];
    absl::StrAppendFormat(&out, "%4d %7d %7d %5d %3d %6d %11d %5.1f%% %8.4f %9.2f\n", i + 1, k.config.hidden_size,
                          k.config.intermediate_size, k.config.num_attention_heads, k.config.num_key_value_heads,
                          k.config.num_hidden_layers, k.params, 100.0 * k.params / total, k.loss, k.perplexity);
  }
  return out;
}

std::string CandidatesToJson(const model::ModelConfig& original, const SearchSpace& s,
                             const std::vector<Candidate>& ranked) {
  nlohmann::json j;
  j["version"] = 1;
  j["original_params"] = model::CountParams(original).total();
  j["space"] = {{"budget", s.budget},
                {"tolerance", s.tolerance},
                {"min_depth", s.min_depth},
                {"min_width", s.min_width},
                {"hidden_divisor", s.hidden_divisor},
                {"ffn_divisor", s.ffn_divisor},
                {"depth_metric", s.depth_metric}};
  j["candidates"] = nlohmann::json::array();
  for (const Candidate& k : ranked) {
    j["candidates"].push_back({{"hidden_size", k.config.hidden_size},
                               {"intermediate_size", k.config.intermediate_size},
                               {"num_attention_heads", k.config.num_attention_heads},
                               {"num_key_value_heads", k.config.num_key_value_heads},
                               {"num_hidden_layers", k.config.num_hidden_layers},
                               {"params", k.params},
                               {"loss", k.loss},
                               {"perplexity", k.perplexity}});
  }
  return j.dump(2) + "\n";
}

}  // namespace topiary::compress
