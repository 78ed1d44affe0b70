#include "worker/compress/prune/plan.h"

#include <torch/torch.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace topiary::compress {
namespace {

absl::Status Bad(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("target.", field, ": ", what));
}

absl::Status CheckSize(absl::string_view field, int64_t value, int64_t original, int64_t divisor) {
  if (value == 0) return absl::OkStatus();
  if (value < 0) return Bad(field, absl::StrCat("must be positive, got ", value));
  if (value > original) return Bad(field, absl::StrCat(value, " is larger than the original ", original));
  if (divisor > 1 && value % divisor != 0) return Bad(field, absl::StrCat(value, " is not a multiple of ", divisor));
  return absl::OkStatus();
}

absl::Status CheckIndices(absl::string_view field, const std::vector<int64_t>& v, int64_t L) {
  std::set<int64_t> seen;
  for (int64_t i : v) {
    if (i < 0 || i >= L) return Bad(field, absl::StrCat("layer ", i, " is outside [0, ", L, ")"));
    if (!seen.insert(i).second) return Bad(field, absl::StrCat("layer ", i, " is listed twice"));
  }
  return absl::OkStatus();
}

std::vector<int64_t> Iota(int64_t n) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// The layers to drop for a num_hidden_layers target.
absl::StatusOr<std::set<int64_t>> LayersToDrop(const model::ModelConfig& c, const Scores& s, const PruneTarget& t) {
  std::set<int64_t> drop(t.drop_layers.begin(), t.drop_layers.end());
  if (t.num_hidden_layers == 0) return drop;
  const int64_t L = c.num_hidden_layers;
  const int64_t n = L - t.num_hidden_layers - static_cast<int64_t>(drop.size());
  if (n < 0) return Bad("num_hidden_layers", "drop_layers already removes more layers than that");
  auto it = s.depth.find(t.depth_metric);
  if (it == s.depth.end() || static_cast<int64_t>(it->second.size()) != L) {
    return Bad("depth_metric", absl::StrCat("no per-layer scores for '", t.depth_metric, "' in the scores file"));
  }
  const std::vector<double>& score = it->second;
  auto window = t.depth_metric == "angular_distance" ? s.angular_windows.find(n) : s.angular_windows.end();
  if (t.contiguous && window != s.angular_windows.end()) {
    // Gromov et al.: the window whose input and output are closest, by the window's own distance.
    int64_t best = -1;
    for (int64_t start = 0; start + n <= L; ++start) {
      bool clash = false;
      for (int64_t i = start; i < start + n; ++i) clash |= drop.count(i) > 0;
      if (!clash && (best < 0 || window->second[start] < window->second[best])) best = start;
    }
    if (best < 0) return Bad("contiguous", "no window of that many layers avoids drop_layers");
    for (int64_t i = best; i < best + n; ++i) drop.insert(i);
    return drop;
  }
  if (t.contiguous) {
    int64_t best = -1;
    double best_sum = 0;
    for (int64_t start = 0; start + n <= L; ++start) {
      bool clash = false;
      double sum = 0;
      for (int64_t i = start; i < start + n; ++i) clash |= drop.count(i) > 0, sum += score[i];
      if (!clash && (best < 0 || sum < best_sum)) best = start, best_sum = sum;
    }
    if (best < 0) return Bad("contiguous", "no window of that many layers avoids drop_layers");
    for (int64_t i = best; i < best + n; ++i) drop.insert(i);
    return drop;
  }
  std::vector<int64_t> order;
  for (int64_t i = 0; i < L; ++i) {
    if (!drop.count(i)) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return score[a] < score[b]; });
  for (int64_t i = 0; i < n; ++i) drop.insert(order[i]);
  return drop;
}

}  // namespace

std::vector<int64_t> TopK(const at::Tensor& scores, int64_t k) {
  at::Tensor s = scores.to(at::kDouble).contiguous();
  std::vector<int64_t> order = Iota(s.numel());
  const double* p = s.data_ptr<double>();
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

absl::Status ValidateTarget(const model::ModelConfig& c, const PruneTarget& t) {
  if (t.divisor < 1) return Bad("divisor", "must be at least 1");
  RETURN_IF_ERROR(CheckSize("hidden_size", t.hidden_size, c.hidden_size, t.divisor));
  RETURN_IF_ERROR(CheckSize("intermediate_size", t.intermediate_size, c.intermediate_size, t.divisor));
  RETURN_IF_ERROR(CheckSize("num_attention_heads", t.num_attention_heads, c.num_attention_heads, 1));
  RETURN_IF_ERROR(CheckSize("num_key_value_heads", t.num_key_value_heads, c.num_key_value_heads, 1));
  RETURN_IF_ERROR(CheckSize("num_hidden_layers", t.num_hidden_layers, c.num_hidden_layers, 1));
  const int64_t nh = t.num_attention_heads ? t.num_attention_heads : c.num_attention_heads;
  const int64_t g = t.num_key_value_heads ? t.num_key_value_heads : std::min(c.num_key_value_heads, nh);
  if (nh % g != 0) {
    return Bad("num_attention_heads", absl::StrCat(nh, " is not a multiple of num_key_value_heads ", g));
  }
  if (nh / g > c.q_per_group()) {
    return Bad("num_attention_heads", absl::StrCat(nh / g, " query heads per KV group exceed the original ",
                                                   c.q_per_group(), " (heads are pruned within groups)"));
  }
  RETURN_IF_ERROR(CheckIndices("drop_layers", t.drop_layers, c.num_hidden_layers));
  RETURN_IF_ERROR(CheckIndices("drop_attention", t.drop_attention, c.num_hidden_layers));
  RETURN_IF_ERROR(CheckIndices("drop_mlp", t.drop_mlp, c.num_hidden_layers));
  if (static_cast<int64_t>(t.drop_layers.size()) >= c.num_hidden_layers)
    return Bad("drop_layers", "would remove every layer");
  return absl::OkStatus();
}

absl::StatusOr<PrunePlan> MakePlan(const model::ModelConfig& c, const Scores& s, const PruneTarget& t) {
  RETURN_IF_ERROR(ValidateTarget(c, t));
  const int64_t L = c.num_hidden_layers;
  if (t.redistribute_heads && !t.num_attention_heads) {
    return Bad("redistribute_heads", "needs a num_attention_heads target");
  }
  auto need = [&](const at::Tensor& x, std::vector<int64_t> shape, const char* field,
                  const char* what) -> absl::Status {
    if (!x.defined() || x.sizes().vec() != shape)
      return Bad(field, absl::StrCat("the scores file has no ", what, " scores of this model's shape"));
    return absl::OkStatus();
  };
  PrunePlan plan;
  plan.config = c;
  model::ModelConfig& pc = plan.config;
  pc.original_json = c.original_json;
  if (t.hidden_size && t.hidden_size != c.hidden_size) {
    RETURN_IF_ERROR(need(s.channels, {c.hidden_size}, "hidden_size", "embedding-channel"));
    plan.channels = TopK(s.channels, t.hidden_size);
    pc.hidden_size = t.hidden_size;
  } else {
    plan.channels = Iota(c.hidden_size);
  }
  const int64_t nh = t.num_attention_heads ? t.num_attention_heads : c.num_attention_heads;
  const int64_t g = t.num_key_value_heads ? t.num_key_value_heads : std::min(c.num_key_value_heads, nh);
  const int64_t r = nh / g, R = c.q_per_group();
  const bool prune_heads = nh != c.num_attention_heads || g != c.num_key_value_heads;
  if (prune_heads) RETURN_IF_ERROR(need(s.heads, {L, c.num_attention_heads}, "num_attention_heads", "head"));
  const int64_t ff = t.intermediate_size ? t.intermediate_size : c.intermediate_size;
  if (ff != c.intermediate_size)
    RETURN_IF_ERROR(need(s.neurons, {L, c.intermediate_size}, "intermediate_size", "neuron"));
  ASSIGN_OR_RETURN(std::set<int64_t> drop, LayersToDrop(c, s, t));
  std::set<int64_t> no_attn(t.drop_attention.begin(), t.drop_attention.end());
  std::set<int64_t> no_mlp(t.drop_mlp.begin(), t.drop_mlp.end());
  for (int64_t l = 0; l < L; ++l) {
    if (drop.count(l)) continue;
    LayerPlan lp;
    lp.source = l;
    lp.has_attention = c.LayerHasAttention(l) && !no_attn.count(l);
    lp.has_mlp = c.LayerHasMlp(l) && !no_mlp.count(l);
    if (prune_heads) {
      at::Tensor hs = s.heads[l].to(at::kDouble).view({c.num_key_value_heads, R});  // (G, R)
      lp.groups = TopK(hs.pow(2).sum(-1).sqrt(), g);
      for (int64_t grp : lp.groups) {
        for (int64_t h : TopK(hs[grp], r)) lp.heads.push_back(grp * R + h);
        if (t.redistribute_heads && r < R) {
          std::vector<int64_t> rank = Iota(R);  // the group's heads, best first
          std::stable_sort(rank.begin(), rank.end(),
                           [&](int64_t a, int64_t b) { return hs[grp][a].item<double>() > hs[grp][b].item<double>(); });
          for (int64_t i = std::max<int64_t>(1, r - (R - r) + 1); i <= r; ++i) {  // 1-based
            lp.head_residual.emplace_back(grp * R + rank[i - 1], grp * R + rank[2 * r - i]);
          }
        }
      }
    } else {
      lp.groups = Iota(c.num_key_value_heads);
      lp.heads = Iota(c.num_attention_heads);
    }
    lp.neurons = ff != c.intermediate_size ? TopK(s.neurons[l], ff) : Iota(c.intermediate_size);
    plan.layers.push_back(std::move(lp));
  }
  pc.num_attention_heads = nh;
  pc.num_key_value_heads = g;
  pc.intermediate_size = ff;
  pc.num_hidden_layers = static_cast<int64_t>(plan.layers.size());
  if (!c.layer_types.empty()) {
    pc.layer_types.clear();
    for (const LayerPlan& lp : plan.layers) pc.layer_types.push_back(c.layer_types[lp.source]);
  }
  pc.has_attention.clear();
  pc.has_mlp.clear();
  bool iso = true;
  for (const LayerPlan& lp : plan.layers) iso &= lp.has_attention && lp.has_mlp;
  if (!iso) {
    for (const LayerPlan& lp : plan.layers)
      pc.has_attention.push_back(lp.has_attention), pc.has_mlp.push_back(lp.has_mlp);
  }
  RETURN_IF_ERROR(model::ValidateConfig(pc));
  return plan;
}

}  // namespace topiary::compress
