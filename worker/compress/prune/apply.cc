// Applying a PrunePlan: slicing every tensor consistently (docs/design.md,
// "The algorithms"), in memory (ApplyPlan) or streaming checkpoint to checkpoint.
#include <torch/torch.h>

#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/compress/prune/plan.h"

namespace topiary::compress {
namespace {

// True when idx is 0, 1, ..., n-1: the slice keeps everything.
bool IsIdentity(const std::vector<int64_t>& idx, int64_t n) {
  if (static_cast<int64_t>(idx.size()) != n) return false;
  for (int64_t i = 0; i < n; ++i) {
    if (idx[i] != i) return false;
  }
  return true;
}

// Kept rows or columns. Keeping everything returns `w` itself (a view of the
// mapped source when streaming: the writer copies straight from the map).
at::Tensor Select(const at::Tensor& w, int64_t dim, const std::vector<int64_t>& idx) {
  if (IsIdentity(idx, w.size(dim))) return w;
  return w.index_select(dim, at::tensor(idx, at::kLong));
}
at::Tensor Rows(const at::Tensor& w, const std::vector<int64_t>& idx) { return Select(w, 0, idx); }

template <typename T>
void GatherRows(const uint8_t* src, uint8_t* dst, int64_t cols_in, const std::vector<int64_t>& rows,
                const std::vector<int64_t>& cols, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const T* in = reinterpret_cast<const T*>(src) + rows[r] * cols_in;
    T* out = reinterpret_cast<T*>(dst) + r * static_cast<int64_t>(cols.size());
    for (size_t j = 0; j < cols.size(); ++j) out[j] = in[cols[j]];
  }
}

// w[rows][:, cols] of a 2-D matrix in one pass over the kept rows: no
// intermediate matrix, and no per-element dispatch (index_select along
// columns of a bf16 matrix copies element by element through memmove).
at::Tensor Gather(const at::Tensor& w, const std::vector<int64_t>& rows, const std::vector<int64_t>& cols) {
  const bool all_rows = IsIdentity(rows, w.size(0)), all_cols = IsIdentity(cols, w.size(1));
  if (all_rows && all_cols) return w;
  if (all_cols) return Rows(w, rows);
  const at::Tensor in = w.contiguous();
  at::Tensor out = at::empty({static_cast<int64_t>(rows.size()), static_cast<int64_t>(cols.size())}, in.options());
  const auto* src = static_cast<const uint8_t*>(in.data_ptr());
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  const int64_t C = in.size(1), grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, C));
  at::parallel_for(0, static_cast<int64_t>(rows.size()), grain, [&](int64_t b, int64_t e) {
    switch (in.element_size()) {
      case 2:
        GatherRows<uint16_t>(src, dst, C, rows, cols, b, e);
        break;
      case 4:
        GatherRows<uint32_t>(src, dst, C, rows, cols, b, e);
        break;
      default:
        GatherRows<uint64_t>(src, dst, C, rows, cols, b, e);
        break;
    }
  });
  return out;
}

std::vector<int64_t> AllOf(int64_t n) {
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return v;
}
at::Tensor MaybeRows(const at::Tensor& b, const std::vector<int64_t>& idx) { return b.defined() ? Rows(b, idx) : b; }

// Rows of the kept heads (or groups) of size HS each.
std::vector<int64_t> HeadRows(const std::vector<int64_t>& heads, int64_t HS) {
  std::vector<int64_t> rows;
  for (int64_t h : heads) {
    for (int64_t i = 0; i < HS; ++i) rows.push_back(h * HS + i);
  }
  return rows;
}

// q_proj rows (or bias) with the head residual redistribution applied: the
// rows of kept head h become 2·q_h − q_partner. `x` is (NH*HS, ...) original.
at::Tensor Redistributed(const at::Tensor& x, const LayerPlan& lp, int64_t HS) {
  if (lp.head_residual.empty() || !x.defined()) return x;
  at::Tensor out = x.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  for (const auto& [kept, partner] : lp.head_residual) {
    out.narrow(0, kept * HS, HS).mul_(2).sub_(x.narrow(0, partner * HS, HS).to(at::kFloat));
  }
  return out.to(x.scalar_type());
}

// A plan made for another model would index out of range.
absl::Status CheckPlanFits(const model::ModelConfig& c, const PrunePlan& plan) {
  auto within = [](const std::vector<int64_t>& v, int64_t n) {
    for (int64_t x : v) {
      if (x < 0 || x >= n) return false;
    }
    return true;
  };
  bool ok = within(plan.channels, c.hidden_size);
  for (const LayerPlan& lp : plan.layers) {
    ok = ok && lp.source >= 0 && lp.source < c.num_hidden_layers && within(lp.heads, c.num_attention_heads) &&
         within(lp.groups, c.num_key_value_heads) && within(lp.neurons, c.intermediate_size);
  }
  if (!ok) return absl::InvalidArgumentError("prune: the plan was made for a model of another shape");
  return absl::OkStatus();
}

// The source block's mapped pages are not needed once its pruned tensors are
// written: dropping them keeps the resident set to about one block.
void ReleaseBlock(model::LlamaModel& src, int64_t l) {
  const std::string prefix = absl::StrCat("model.layers.", l, ".");
  for (auto& [name, t] : src.NamedParameters()) {
    if (name.rfind(prefix, 0) == 0) model::ReleaseMappedPages(*t);
  }
}

}  // namespace

model::BlockWeights PruneBlock(const model::LlamaModel& src, const PrunePlan& plan, size_t k) {
  torch::NoGradGuard no_grad;
  const model::ModelConfig& c = src.config;
  const std::vector<int64_t>& ch = plan.channels;
  const LayerPlan& lp = plan.layers[k];
  const model::BlockWeights& w = src.layers[lp.source];
  model::BlockWeights b;
  if (lp.has_attention) {
    std::vector<int64_t> q_rows = HeadRows(lp.heads, c.head_dim), kv_rows = HeadRows(lp.groups, c.head_dim);
    b.input_norm = Rows(w.input_norm, ch);
    b.q_proj = Gather(Redistributed(w.q_proj, lp, c.head_dim), q_rows, ch);  // (NH'*HS, C')
    b.k_proj = Gather(w.k_proj, kv_rows, ch);                                // (G'*HS, C')
    b.v_proj = Gather(w.v_proj, kv_rows, ch);
    b.q_bias = MaybeRows(Redistributed(w.q_bias, lp, c.head_dim), q_rows);
    b.k_bias = MaybeRows(w.k_bias, kv_rows);
    b.v_bias = MaybeRows(w.v_bias, kv_rows);
    b.o_proj = Gather(w.o_proj, ch, q_rows);  // (C', NH'*HS)
    b.o_bias = MaybeRows(w.o_bias, ch);
  }
  if (lp.has_mlp) {
    b.post_norm = Rows(w.post_norm, ch);
    b.gate_proj = Gather(w.gate_proj, lp.neurons, ch);  // (FF', C')
    b.up_proj = Gather(w.up_proj, lp.neurons, ch);
    b.gate_bias = MaybeRows(w.gate_bias, lp.neurons);
    b.up_bias = MaybeRows(w.up_bias, lp.neurons);
    b.down_proj = Gather(w.down_proj, ch, lp.neurons);  // (C', FF')
    b.down_bias = MaybeRows(w.down_bias, ch);
  }
  return b;
}

model::LlamaModel ApplyPlan(const model::LlamaModel& src, const PrunePlan& plan) {
  torch::NoGradGuard no_grad;
  model::LlamaModel out;
  out.config = plan.config;
  out.compute_dtype = src.compute_dtype;
  out.embed_tokens = Gather(src.embed_tokens, AllOf(src.embed_tokens.size(0)), plan.channels);  // (V, C')
  out.norm = Rows(src.norm, plan.channels);
  for (size_t k = 0; k < plan.layers.size(); ++k) out.layers.push_back(PruneBlock(src, plan, k));
  out.lm_head = src.config.tie_word_embeddings
                    ? out.embed_tokens
                    : Gather(src.lm_head, AllOf(src.lm_head.size(0)), plan.channels);  // (V, C')
  return out;
}

absl::Status PruneCheckpoint(const std::string& source_dir, const PrunePlan& plan, const std::string& out_dir,
                             const model::SaveOptions& options) {
  ASSIGN_OR_RETURN(model::LlamaModel src, model::MapCheckpoint(source_dir));
  RETURN_IF_ERROR(CheckPlanFits(src.config, plan));
  // The output's tensors in writer order, each with the block it lives in.
  model::LlamaModel out;
  out.config = plan.config;
  out.layers.resize(plan.layers.size());
  auto params = out.NamedParameters();
  std::vector<int64_t> block_of(params.size(), -1);
  for (size_t i = 0; i < params.size(); ++i) {
    absl::string_view name = params[i].first;
    if (absl::ConsumePrefix(&name, "model.layers.")) {
      int64_t k = 0;
      absl::SimpleAtoi(name.substr(0, name.find('.')), &k);
      block_of[i] = k;
    }
  }
  int64_t current = -1;  // the one block held in memory
  auto produce = [&](size_t i) -> absl::StatusOr<at::Tensor> {
    torch::NoGradGuard no_grad;
    const std::string& name = params[i].first;
    if (block_of[i] >= 0) {
      if (block_of[i] != current) {
        if (current >= 0) {
          out.layers[current] = model::BlockWeights();
          ReleaseBlock(src, plan.layers[current].source);
        }
        current = block_of[i];
        out.layers[current] = PruneBlock(src, plan, current);
      }
      at::Tensor t = std::move(*params[i].second);  // written once: release it now
      *params[i].second = at::Tensor();
      return t;
    }
    if (name == "model.embed_tokens.weight") {
      at::Tensor t = Gather(src.embed_tokens, AllOf(src.embed_tokens.size(0)), plan.channels);
      if (!t.is_same(src.embed_tokens)) model::ReleaseMappedPages(src.embed_tokens);  // copied already
      return t;
    }
    if (name == "model.norm.weight") return Rows(src.norm, plan.channels);
    if (name == "lm_head.weight") return Gather(src.lm_head, AllOf(src.lm_head.size(0)), plan.channels);
    return absl::InternalError(absl::StrCat("prune: no rule for tensor '", name, "'"));
  };
  model::SaveOptions so = options;
  if (so.copy_files_from.empty()) so.copy_files_from = source_dir;
  return model::SaveCheckpointStreaming(plan.config, produce, out_dir, so);
}

}  // namespace topiary::compress
