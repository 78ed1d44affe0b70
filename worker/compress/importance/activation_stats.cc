#include "worker/compress/importance/activation_stats.h"

#include <torch/torch.h>

#include <cmath>

namespace topiary::compress {

using model::Point;

ActivationStats::ActivationStats(const model::ModelConfig& c, Aggregation agg, MlpActivation mlp)
    : config_(c), agg_(agg), mlp_(mlp) {
  const int64_t L = c.num_hidden_layers;
  for (int64_t l = 0; l < L; ++l) {
    heads_.emplace_back(c.num_attention_heads);
    neurons_.emplace_back(c.intermediate_size);
  }
  for (int64_t i = 0; i < 2 * L + 1; ++i) norms_.emplace_back(c.hidden_size);
  auto zeros = [&] { return at::zeros({L}, at::kDouble); };
  block_cos_ = zeros(), rel_l1_ = zeros(), rel_l2_ = zeros(), attn_cos_ = zeros(), mlp_cos_ = zeros();
  angular_ = at::zeros({L, L + 1}, at::kDouble);
  last_token_.resize(L + 1);
}

bool ActivationStats::Wants(Point p) const {
  switch (p) {
    case Point::kMlpGate:
      return mlp_ == MlpActivation::kGateOutput;
    case Point::kMlpActivation:
      return mlp_ == MlpActivation::kDownProjInput;
    default:
      return true;
  }
}

at::Tensor ActivationStats::CosPerToken(const at::Tensor& a, const at::Tensor& b) {
  return at::cosine_similarity(a.to(at::kFloat), b.to(at::kFloat), /*dim=*/-1, /*eps=*/1e-8);
}

void ActivationStats::AddDepth(int64_t l, const at::Tensor& in, const at::Tensor& out) {
  at::Tensor a = in.to(at::kFloat), b = out.to(at::kFloat);
  block_cos_[l] += CosPerToken(a, b).sum().item<double>();
  at::Tensor d = b - a;
  rel_l1_[l] += (d.abs().sum(-1) / a.abs().sum(-1).clamp_min(1e-12)).sum().item<double>();
  rel_l2_[l] += (d.norm(2, -1) / a.norm(2, -1).clamp_min(1e-12)).sum().item<double>();
}

void ActivationStats::Observe(Point p, int64_t l, at::Tensor& x0) {
  torch::NoGradGuard no_grad;
  at::Tensor x = x0.detach();
  const int64_t L = config_.num_hidden_layers;
  switch (p) {
    case Point::kBlockInput:
      if (l == 0) {
        tokens_ += static_cast<double>(x.size(0) * x.size(1));
        sequences_ += static_cast<double>(x.size(0));
      }
      block_input_ = x;
      attn_residual_ = x;                                          // until an attention sublayer runs
      last_token_[l] = x.select(1, x.size(1) - 1).to(at::kFloat);  // (B, C)
      break;
    case Point::kAttnNorm:
      norms_[2 * l].Add(x.abs(), agg_.seq);
      break;
    case Point::kHeads:
      heads_[l].Add(x.to(at::kFloat).norm(2, -1), agg_.seq);
      break;  // (B, T, NH)
    case Point::kAttnResidual:
      attn_cos_[l] += CosPerToken(block_input_, x).sum().item<double>();
      attn_residual_ = x;
      break;
    case Point::kMlpNorm:
      norms_[2 * l + 1].Add(x.abs(), agg_.seq);
      break;
    case Point::kMlpGate:
    case Point::kMlpActivation:
      neurons_[l].Add(x.abs(), agg_.seq);
      break;
    case Point::kBlockOutput:
      AddDepth(l, block_input_, x);
      mlp_cos_[l] += CosPerToken(attn_residual_, x).sum().item<double>();
      if (l == L - 1) {
        last_token_[L] = x.select(1, x.size(1) - 1).to(at::kFloat);
        for (int64_t s = 0; s < L; ++s) {
          for (int64_t e = s + 1; e <= L; ++e) {
            at::Tensor cos = at::cosine_similarity(last_token_[s], last_token_[e], -1, 1e-8).clamp(-1, 1);
            angular_[s][e - s] += (at::arccos(cos) / M_PI).sum().item<double>();
          }
        }
      }
      break;
    case Point::kFinalNorm:
      norms_[2 * L].Add(x.abs(), agg_.seq);
      break;
  }
}

at::Tensor ActivationStats::Packed() const {
  std::vector<at::Tensor> parts;
  auto add_units = [&](const std::vector<UnitStats>& v, int64_t units) {
    for (const UnitStats& s : v) {
      parts.push_back(s.units() ? s.Packed().to(at::kDouble).flatten() : at::zeros({3 * units}, at::kDouble));
    }
  };
  add_units(heads_, config_.num_attention_heads);
  add_units(neurons_, config_.intermediate_size);
  add_units(norms_, config_.hidden_size);
  for (const at::Tensor& t : {block_cos_, rel_l1_, rel_l2_, attn_cos_, mlp_cos_, angular_})
    parts.push_back(t.flatten());
  parts.push_back(at::tensor({tokens_, sequences_}, at::kDouble));
  return at::cat(parts);
}

void ActivationStats::SetPacked(const at::Tensor& packed) {
  int64_t off = 0;
  auto take = [&](int64_t n) {
    at::Tensor t = packed.narrow(0, off, n);
    off += n;
    return t;
  };
  auto set_units = [&](std::vector<UnitStats>& v, int64_t units) {
    for (UnitStats& s : v) s.SetPacked(take(3 * units).view({3, units}).to(at::kFloat));
  };
  set_units(heads_, config_.num_attention_heads);
  set_units(neurons_, config_.intermediate_size);
  set_units(norms_, config_.hidden_size);
  const int64_t L = config_.num_hidden_layers;
  for (at::Tensor* t : {&block_cos_, &rel_l1_, &rel_l2_, &attn_cos_, &mlp_cos_}) *t = take(L).clone();
  angular_ = take(L * (L + 1)).view({L, L + 1}).clone();
  at::Tensor counts = take(2);
  tokens_ = counts[0].item<double>();
  sequences_ = counts[1].item<double>();
}

at::Tensor ActivationStats::HeadScores() const {
  std::vector<at::Tensor> rows;
  for (const UnitStats& s : heads_) rows.push_back(s.Score(agg_.batch));
  return at::stack(rows);
}

at::Tensor ActivationStats::KvGroupScores() const {
  const int64_t G = config_.num_key_value_heads, R = config_.q_per_group();
  at::Tensor h = HeadScores();                             // (L, NH)
  return h.view({h.size(0), G, R}).pow(2).sum(-1).sqrt();  // (L, G)
}

at::Tensor ActivationStats::NeuronScores() const {
  std::vector<at::Tensor> rows;
  for (const UnitStats& s : neurons_) rows.push_back(s.Score(agg_.batch));
  return at::stack(rows);
}

at::Tensor ActivationStats::ChannelScoresPerNorm() const {
  std::vector<at::Tensor> rows;
  for (const UnitStats& s : norms_) rows.push_back(s.Score(agg_.batch));
  return at::stack(rows);
}

at::Tensor ActivationStats::ChannelScores() const { return ChannelScoresPerNorm().sum(0); }

namespace {
std::vector<double> PerToken(const at::Tensor& sums, double tokens, bool one_minus) {
  std::vector<double> out;
  for (int64_t i = 0; i < sums.numel(); ++i) {
    double mean = tokens > 0 ? sums[i].item<double>() / tokens : 0;
    out.push_back(one_minus ? 1 - mean : mean);
  }
  return out;
}
}  // namespace

std::vector<double> ActivationStats::BlockInfluence() const { return PerToken(block_cos_, tokens_, true); }
std::vector<double> ActivationStats::RelativeL1() const { return PerToken(rel_l1_, tokens_, false); }
std::vector<double> ActivationStats::RelativeL2() const { return PerToken(rel_l2_, tokens_, false); }
std::vector<double> ActivationStats::AttentionInfluence() const { return PerToken(attn_cos_, tokens_, true); }
std::vector<double> ActivationStats::MlpInfluence() const { return PerToken(mlp_cos_, tokens_, true); }

std::vector<std::vector<double>> ActivationStats::AngularDistance() const {
  const int64_t L = config_.num_hidden_layers;
  std::vector<std::vector<double>> out(L);
  for (int64_t n = 1; n <= L; ++n) {
    for (int64_t s = 0; s + n <= L; ++s) {
      out[n - 1].push_back(sequences_ > 0 ? angular_[s][n].item<double>() / sequences_ : 0);
    }
  }
  return out;
}

}  // namespace topiary::compress
