#include "worker/model/llama.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "worker/model/fused_ops.h"

namespace topiary::model {
namespace {

using at::Tensor;

// Calls the observer when it wants this point.
inline void Emit(ActivationObserver* obs, Point p, int64_t layer, Tensor& x) {
  if (obs != nullptr && obs->Wants(p)) obs->Observe(p, layer, x);
}

// x (B, T, H, HS); cos/sin (T, HS). Rotate-half convention.
Tensor ApplyRope(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  Tensor x1 = x.narrow(-1, 0, half);
  Tensor x2 = x.narrow(-1, half, half);
  Tensor rotated = at::cat({-x2, x1}, -1);
  Tensor c = cos.unsqueeze(1);  // (T, 1, HS)
  Tensor s = sin.unsqueeze(1);
  return x * c + rotated * s;
}

// The inverse frequencies (HS/2) with rope scaling applied, for a sequence
// whose positions end before `seq_len` (dynamic scaling depends on it).
Tensor InverseFrequencies(const ModelConfig& c, int64_t seq_len) {
  const int64_t HS = c.head_dim;
  const RopeScaling& rs = c.rope_scaling;
  double base = c.rope_theta;
  if (rs.type == RopeScaling::Type::kDynamic && seq_len > c.max_position_embeddings) {
    // Dynamic NTK (Hugging Face's "dynamic"): the base grows with the length
    // beyond the trained context, as transformers recomputes it per forward.
    const double ratio = rs.factor * static_cast<double>(seq_len) / static_cast<double>(c.max_position_embeddings);
    base *= std::pow(ratio - (rs.factor - 1), static_cast<double>(HS) / static_cast<double>(HS - 2));
  }
  // fp32 throughout, as Hugging Face computes it, so the tables match bit for bit.
  Tensor inv = 1.0 / at::pow(base, at::arange(0, HS, 2, at::kLong).to(at::kFloat) / static_cast<double>(HS));
  if (rs.type == RopeScaling::Type::kLinear) return inv / rs.factor;
  if (rs.type == RopeScaling::Type::kLlama3) {
    // Llama 3.1: keep high frequencies, divide low ones by factor, and blend
    // smoothly in between (wavelength thresholds from the original context).
    const double old_ctx = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_ctx / rs.low_freq_factor;
    const double high_wavelen = old_ctx / rs.high_freq_factor;
    Tensor wavelen = 2 * M_PI / inv;
    Tensor smooth = (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    Tensor smoothed = (1 - smooth) * inv / rs.factor + smooth * inv;
    Tensor out = at::where(wavelen > low_wavelen, inv / rs.factor, inv);
    Tensor medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen);
    return at::where(medium, smoothed, out);
  }
  return inv;
}

// Grouped-query causal attention without copying K/V per query head: the R
// query heads of a group (head h uses group h / R, as Hugging Face's
// repeat_kv) are stacked along time, so one batched matmul per group scores
// all of them against the group's keys. Row r of the stacked scores is
// query position r mod T, which is what CausalSoftmax masks by.
// q (B, T, NH, HS), k/v (B, T, G, HS) -> (B, T, NH, HS).
Tensor Attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t G) {
  const int64_t B = q.size(0), T = q.size(1), NH = q.size(2), HS = q.size(3), R = NH / G;
  Tensor qg = q.transpose(1, 2).reshape({B, G, R * T, HS});                        // (B, G, R·T, HS)
  Tensor kg = k.transpose(1, 2);                                                   // (B, G, T, HS)
  Tensor vg = v.transpose(1, 2);                                                   // (B, G, T, HS)
  Tensor scores = MatMul(qg, kg.transpose(2, 3));                                  // (B, G, R·T, T)
  Tensor probs = CausalSoftmax(scores, 1.0 / std::sqrt(static_cast<double>(HS)));  // fp32 inside, 0 above the diagonal
  return MatMul(probs, vg).view({B, NH, T, HS}).transpose(1, 2);                   // (B, T, NH, HS)
}

// A weight in the compute dtype: itself, or (held narrower) a widened copy
// that lives only as long as the expression using it, so at most one
// matrix is held twice at a time.
inline Tensor In(const Tensor& w, at::ScalarType dt) { return !w.defined() || w.scalar_type() == dt ? w : w.to(dt); }

}  // namespace

std::pair<Tensor, Tensor> RopeTables(const ModelConfig& c, int64_t T, int64_t offset) {
  Tensor inv = InverseFrequencies(c, offset + T);                         // (HS/2)
  Tensor pos = at::arange(offset, offset + T, at::kLong).to(at::kFloat);  // (T)
  Tensor freqs = at::outer(pos, inv);                                     // (T, HS/2)
  Tensor emb = at::cat({freqs, freqs}, -1);                               // (T, HS)
  return {emb.cos(), emb.sin()};
}

// Rows of lm_head converted at a time when it is held narrower than the
// compute dtype: 8k rows of a 4096-wide head are 128 MB in fp32.
constexpr int64_t kHeadSliceRows = 8192;

Tensor LmHead(const LlamaModel& m, const Tensor& hidden) {
  const at::ScalarType dt = m.ComputeDtype();
  if (m.lm_head.scalar_type() == dt) return Linear(hidden.to(dt), m.lm_head);
  const int64_t V = m.lm_head.size(0);
  std::vector<Tensor> parts;
  for (int64_t r = 0; r < V; r += kHeadSliceRows) {
    parts.push_back(Linear(hidden.to(dt), m.lm_head.narrow(0, r, std::min(kHeadSliceRows, V - r)).to(dt)));
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts, -1);
}

Tensor BlockForward(const LlamaModel& m, int64_t l, const Tensor& x_in, const Tensor& cos, const Tensor& sin,
                    ActivationObserver* obs) {
  const ModelConfig& c = m.config;
  const int64_t B = x_in.size(0), T = x_in.size(1);
  const int64_t NH = c.num_attention_heads, G = c.num_key_value_heads, HS = c.head_dim;
  const BlockWeights& w = m.layers[l];
  const at::ScalarType dt = m.ComputeDtype();
  Tensor x = x_in;
  Emit(obs, Point::kBlockInput, l, x);
  if (c.LayerHasAttention(l)) {
    Tensor h = FusedRmsNorm(x, In(w.input_norm, dt), c.rms_norm_eps);  // (B, T, C)
    Emit(obs, Point::kAttnNorm, l, h);
    Tensor q = Linear(h, In(w.q_proj, dt), In(w.q_bias, dt)).view({B, T, NH, HS});
    Tensor k = Linear(h, In(w.k_proj, dt), In(w.k_bias, dt)).view({B, T, G, HS});
    Tensor v = Linear(h, In(w.v_proj, dt), In(w.v_bias, dt)).view({B, T, G, HS});
    q = ApplyRope(q, cos, sin);
    k = ApplyRope(k, cos, sin);
    Tensor heads = Attention(q, k, v, G);  // (B, T, NH, HS)
    Emit(obs, Point::kHeads, l, heads);
    x = x + Linear(heads.reshape({B, T, NH * HS}), In(w.o_proj, dt), In(w.o_bias, dt));  // (B, T, C)
    Emit(obs, Point::kAttnResidual, l, x);
  }
  if (c.LayerHasMlp(l)) {
    Tensor h = FusedRmsNorm(x, In(w.post_norm, dt), c.rms_norm_eps);  // (B, T, C)
    Emit(obs, Point::kMlpNorm, l, h);
    Tensor gate = Linear(h, In(w.gate_proj, dt), In(w.gate_bias, dt));  // (B, T, FF)
    Emit(obs, Point::kMlpGate, l, gate);
    Tensor act = SwiGlu(gate, Linear(h, In(w.up_proj, dt), In(w.up_bias, dt)));  // (B, T, FF)
    Emit(obs, Point::kMlpActivation, l, act);
    x = x + Linear(act, In(w.down_proj, dt), In(w.down_bias, dt));  // (B, T, C)
  }
  Emit(obs, Point::kBlockOutput, l, x);
  return x;
}

Tensor Embed(const LlamaModel& m, const Tensor& tokens) {
  return at::embedding(m.embed_tokens, tokens).to(m.ComputeDtype());  // rows gathered, then converted
}

Tensor FinalNorm(const LlamaModel& m, const Tensor& x) {
  return FusedRmsNorm(x, In(m.norm, m.ComputeDtype()), m.config.rms_norm_eps);
}

Tensor Forward(const LlamaModel& m, const Tensor& tokens, const ForwardOptions& opt) {
  const ModelConfig& c = m.config;
  const int64_t T = tokens.size(1);
  ActivationObserver* obs = opt.observer;
  const at::ScalarType dt = m.ComputeDtype();

  auto [cos32, sin32] = RopeTables(c, T);
  Tensor cos = cos32.to(dt), sin = sin32.to(dt);  // (T, HS)

  Tensor x = Embed(m, tokens);  // (B, T, C)
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) x = BlockForward(m, l, x, cos, sin, obs);
  Tensor h = FinalNorm(m, x);
  Emit(obs, Point::kFinalNorm, -1, h);
  if (opt.return_hidden) return h;
  return LmHead(m, h);  // (B, T, V)
}

// ---- Parameters --------------------------------------------------------------

namespace {

// One table drives names, shapes and pointers, so they cannot disagree.
template <typename Fn>
void ForEachBlockParam(const ModelConfig& c, int64_t l, Fn&& fn) {
  const int64_t C = c.hidden_size, NH = c.num_attention_heads, G = c.num_key_value_heads, HS = c.head_dim,
                FF = c.intermediate_size;
  const std::string p = absl::StrCat("model.layers.", l, ".");
  if (c.LayerHasAttention(l)) {
    fn(p + "input_layernorm.weight", std::vector<int64_t>{C}, &BlockWeights::input_norm);
    fn(p + "self_attn.q_proj.weight", std::vector<int64_t>{NH * HS, C}, &BlockWeights::q_proj);
    if (c.qkv_bias) fn(p + "self_attn.q_proj.bias", std::vector<int64_t>{NH * HS}, &BlockWeights::q_bias);
    fn(p + "self_attn.k_proj.weight", std::vector<int64_t>{G * HS, C}, &BlockWeights::k_proj);
    if (c.qkv_bias) fn(p + "self_attn.k_proj.bias", std::vector<int64_t>{G * HS}, &BlockWeights::k_bias);
    fn(p + "self_attn.v_proj.weight", std::vector<int64_t>{G * HS, C}, &BlockWeights::v_proj);
    if (c.qkv_bias) fn(p + "self_attn.v_proj.bias", std::vector<int64_t>{G * HS}, &BlockWeights::v_bias);
    fn(p + "self_attn.o_proj.weight", std::vector<int64_t>{C, NH * HS}, &BlockWeights::o_proj);
    if (c.o_bias) fn(p + "self_attn.o_proj.bias", std::vector<int64_t>{C}, &BlockWeights::o_bias);
  }
  if (c.LayerHasMlp(l)) {
    fn(p + "post_attention_layernorm.weight", std::vector<int64_t>{C}, &BlockWeights::post_norm);
    fn(p + "mlp.gate_proj.weight", std::vector<int64_t>{FF, C}, &BlockWeights::gate_proj);
    if (c.mlp_bias) fn(p + "mlp.gate_proj.bias", std::vector<int64_t>{FF}, &BlockWeights::gate_bias);
    fn(p + "mlp.up_proj.weight", std::vector<int64_t>{FF, C}, &BlockWeights::up_proj);
    if (c.mlp_bias) fn(p + "mlp.up_proj.bias", std::vector<int64_t>{FF}, &BlockWeights::up_bias);
    fn(p + "mlp.down_proj.weight", std::vector<int64_t>{C, FF}, &BlockWeights::down_proj);
    if (c.mlp_bias) fn(p + "mlp.down_proj.bias", std::vector<int64_t>{C}, &BlockWeights::down_bias);
  }
}

}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> LlamaModel::ExpectedShapes(const ModelConfig& c) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.emplace_back("model.embed_tokens.weight", std::vector<int64_t>{c.vocab_size, c.hidden_size});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    ForEachBlockParam(c, l, [&](std::string name, std::vector<int64_t> shape, auto) {
      out.emplace_back(std::move(name), std::move(shape));
    });
  }
  out.emplace_back("model.norm.weight", std::vector<int64_t>{c.hidden_size});
  if (!c.tie_word_embeddings) out.emplace_back("lm_head.weight", std::vector<int64_t>{c.vocab_size, c.hidden_size});
  return out;
}

std::vector<BlockParam> BlockParams(const ModelConfig& c, int64_t l) {
  std::vector<BlockParam> out;
  ForEachBlockParam(c, l, [&](std::string name, std::vector<int64_t> shape, Tensor BlockWeights::*member) {
    out.push_back({std::move(name), std::move(shape), member});
  });
  return out;
}

std::vector<std::pair<std::string, Tensor*>> LlamaModel::NamedParameters() {
  std::vector<std::pair<std::string, Tensor*>> out;
  out.emplace_back("model.embed_tokens.weight", &embed_tokens);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    ForEachBlockParam(config, l, [&](std::string name, std::vector<int64_t>, Tensor BlockWeights::*member) {
      out.emplace_back(std::move(name), &(layers[l].*member));
    });
  }
  out.emplace_back("model.norm.weight", &norm);
  if (!config.tie_word_embeddings) out.emplace_back("lm_head.weight", &lm_head);
  return out;
}

at::ScalarType LlamaModel::dtype() const { return embed_tokens.scalar_type(); }

at::ScalarType LlamaModel::ComputeDtype() const {
  return compute_dtype == at::ScalarType::Undefined ? dtype() : compute_dtype;
}

LlamaModel InitModel(const ModelConfig& c, uint64_t seed, at::ScalarType dtype, double init_std) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  LlamaModel m;
  m.config = c;
  m.layers.resize(c.num_hidden_layers);
  auto params = m.NamedParameters();
  auto shapes = LlamaModel::ExpectedShapes(c);
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& name = params[i].first;
    const auto& shape = shapes[i].second;
    bool is_norm = name.find("norm") != std::string::npos;
    bool is_bias = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    Tensor t;
    if (is_norm)
      t = at::ones(shape, at::kFloat);
    else if (is_bias)
      t = at::zeros(shape, at::kFloat);
    else
      t = at::normal(0.0, init_std, shape, gen, at::TensorOptions().dtype(at::kFloat));
    *params[i].second = t.to(dtype);
  }
  if (c.tie_word_embeddings) m.lm_head = m.embed_tokens;
  return m;
}

void CastModel(LlamaModel& m, at::ScalarType dtype) {
  for (auto& [name, t] : m.NamedParameters()) {
    if (t->scalar_type() != dtype) *t = t->to(dtype);
  }
  if (m.config.tie_word_embeddings) m.lm_head = m.embed_tokens;
}

}  // namespace topiary::model
