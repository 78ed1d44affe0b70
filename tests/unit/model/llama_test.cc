#include "worker/model/llama.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "testing/test_util.h"
#include "worker/model/sampling.h"

namespace topiary::model {
namespace {

using topiary::testing::TinyConfig;

// Records the shape of every activation reported.
class ShapeRecorder : public ActivationObserver {
 public:
  bool Wants(Point) const override { return true; }
  void Observe(Point p, int64_t layer, at::Tensor& x) override {
    shapes[{static_cast<int>(p), layer}] = x.sizes().vec();
  }
  std::map<std::pair<int, int64_t>, std::vector<int64_t>> shapes;
};

// Replaces block `skip`'s output with its input: the block becomes an identity.
class SkipBlock : public ActivationObserver {
 public:
  explicit SkipBlock(int64_t skip) : skip_(skip) {}
  bool Wants(Point p) const override { return p == Point::kBlockInput || p == Point::kBlockOutput; }
  void Observe(Point p, int64_t layer, at::Tensor& x) override {
    if (layer != skip_) return;
    if (p == Point::kBlockInput)
      input_ = x;
    else
      x = input_;
  }

 private:
  int64_t skip_;
  at::Tensor input_;
};

TEST(Llama, ForwardShapesAndObservationPoints) {
  torch::NoGradGuard g;
  ModelConfig c = TinyConfig();
  LlamaModel m = InitModel(c, 1, at::kFloat);
  at::Tensor tokens = at::randint(0, c.vocab_size, {2, 5}, at::kLong);
  ShapeRecorder rec;
  ForwardOptions opt;
  opt.observer = &rec;
  at::Tensor logits = Forward(m, tokens, opt);
  EXPECT_EQ(logits.sizes().vec(), (std::vector<int64_t>{2, 5, c.vocab_size}));
  auto shape = [&](Point p, int64_t l) { return rec.shapes.at({static_cast<int>(p), l}); };
  EXPECT_EQ(shape(Point::kHeads, 0), (std::vector<int64_t>{2, 5, 4, 8}));
  EXPECT_EQ(shape(Point::kMlpActivation, 2), (std::vector<int64_t>{2, 5, 64}));
  EXPECT_EQ(shape(Point::kMlpGate, 1), (std::vector<int64_t>{2, 5, 64}));
  EXPECT_EQ(shape(Point::kBlockOutput, 2), (std::vector<int64_t>{2, 5, 32}));
  EXPECT_EQ(shape(Point::kFinalNorm, -1), (std::vector<int64_t>{2, 5, 32}));
  EXPECT_EQ(rec.shapes.size(), 8u * 3 + 1);
}

TEST(Llama, IsCausal) {
  torch::NoGradGuard g;
  ModelConfig c = TinyConfig();
  LlamaModel m = InitModel(c, 2, at::kFloat);
  at::Tensor a = at::randint(0, c.vocab_size, {1, 8}, at::kLong);
  at::Tensor b = a.clone();
  b[0][6] = (b[0][6].item<int64_t>() + 1) % c.vocab_size;
  at::Tensor la = Forward(m, a), lb = Forward(m, b);
  EXPECT_TRUE(la.narrow(1, 0, 6).allclose(lb.narrow(1, 0, 6), 0, 1e-6));
  EXPECT_FALSE(la.narrow(1, 6, 2).allclose(lb.narrow(1, 6, 2), 0, 1e-4));
}

TEST(Llama, ObserverReplacementEqualsDroppingTheBlock) {
  torch::NoGradGuard g;
  ModelConfig c = TinyConfig();
  LlamaModel m = InitModel(c, 3, at::kFloat, 0.2);
  at::Tensor tokens = at::randint(0, c.vocab_size, {2, 6}, at::kLong);
  SkipBlock skip(1);
  ForwardOptions opt;
  opt.observer = &skip;
  at::Tensor skipped = Forward(m, tokens, opt);
  LlamaModel dropped = m;
  dropped.layers.erase(dropped.layers.begin() + 1);
  dropped.config.num_hidden_layers = 2;
  EXPECT_TRUE(skipped.allclose(Forward(dropped, tokens), 1e-5, 1e-5));
  EXPECT_FALSE(skipped.allclose(Forward(m, tokens), 1e-3, 1e-3));
}

TEST(Llama, MissingSublayersAreSkipped) {
  torch::NoGradGuard g;
  ModelConfig c = TinyConfig();
  LlamaModel m = InitModel(c, 4, at::kFloat, 0.2);
  at::Tensor tokens = at::randint(0, c.vocab_size, {1, 6}, at::kLong);
  // Zeroing o_proj and down_proj makes a block an identity.
  LlamaModel zeroed = InitModel(c, 4, at::kFloat, 0.2);
  zeroed.layers[0].o_proj.zero_();
  ModelConfig no_attn = c;
  no_attn.has_attention = {false, true, true};
  LlamaModel without = m;
  without.config = no_attn;
  EXPECT_TRUE(Forward(zeroed, tokens).allclose(Forward(without, tokens), 1e-5, 1e-5));
}

TEST(Llama, Bf16IsCloseToFp32) {
  torch::NoGradGuard g;
  ModelConfig c = TinyConfig();
  LlamaModel m = InitModel(c, 5, at::kFloat, 0.1);
  at::Tensor tokens = at::randint(0, c.vocab_size, {2, 16}, at::kLong);
  at::Tensor ref = Forward(m, tokens);
  LlamaModel half = m;
  CastModel(half, at::kBFloat16);
  at::Tensor out = Forward(half, tokens).to(at::kFloat);
  EXPECT_LT((out - ref).abs().max().item<float>(), 0.05f * ref.abs().max().item<float>());
}

// Dynamic NTK rope: the default tables up to max_position_embeddings; past
// it, the base grows to theta * (factor * T / max - (factor - 1))^(HS / (HS - 2)).
TEST(Llama, DynamicRopeGrowsTheBaseOnlyPastTheTrainedContext) {
  ModelConfig c = TinyConfig();
  c.max_position_embeddings = 16;
  ModelConfig plain = c;
  c.rope_scaling.type = RopeScaling::Type::kDynamic;
  c.rope_scaling.factor = 2.0;
  auto [cos_short, sin_short] = RopeTables(c, 16);
  auto [cos_ref, sin_ref] = RopeTables(plain, 16);
  EXPECT_TRUE(cos_short.equal(cos_ref) && sin_short.equal(sin_ref));
  const int64_t T = 40, HS = c.head_dim;
  auto [cos_long, sin_long] = RopeTables(c, T);
  ModelConfig grown = plain;
  grown.rope_theta = c.rope_theta * std::pow(2.0 * T / 16 - 1.0, static_cast<double>(HS) / (HS - 2));
  auto [cos_want, sin_want] = RopeTables(grown, T);
  EXPECT_TRUE(cos_long.allclose(cos_want, 1e-5, 1e-5) && sin_long.allclose(sin_want, 1e-5, 1e-5));
  auto [cos_plain, sin_plain] = RopeTables(plain, T);
  EXPECT_FALSE(cos_long.allclose(cos_plain, 1e-3, 1e-3));
}

TEST(Llama, NamedParametersMatchExpectedShapes) {
  ModelConfig c = TinyConfig();
  c.qkv_bias = true;
  c.mlp_bias = true;
  LlamaModel m = InitModel(c, 1, at::kFloat);
  auto params = m.NamedParameters();
  auto shapes = LlamaModel::ExpectedShapes(c);
  ASSERT_EQ(params.size(), shapes.size());
  int64_t total = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(params[i].first, shapes[i].first);
    EXPECT_EQ(params[i].second->sizes().vec(), shapes[i].second) << params[i].first;
    total += params[i].second->numel();
  }
  EXPECT_EQ(total, CountParams(c).total());
}

TEST(Sampling, GreedyIsDeterministicAndTopPSeeded) {
  ModelConfig c = TinyConfig();
  LlamaModel m = InitModel(c, 6, at::kFloat, 0.5);
  SampleOptions greedy;
  greedy.greedy = true;
  greedy.max_new_tokens = 6;
  auto a = Generate(m, {1, 2, 3}, greedy);
  EXPECT_EQ(a, Generate(m, {1, 2, 3}, greedy));
  EXPECT_EQ(a.size(), 6u);
  SampleOptions top;
  top.max_new_tokens = 8;
  top.seed = 11;
  auto s1 = Generate(m, {1, 2, 3}, top), s2 = Generate(m, {1, 2, 3}, top);
  EXPECT_EQ(s1, s2);
  top.top_p = 1e-9;  // only the most likely token survives: greedy
  top.max_new_tokens = 6;
  EXPECT_EQ(Generate(m, {1, 2, 3}, top), a);
  for (int64_t id : s1) EXPECT_LT(id, c.vocab_size);
}

}  // namespace
}  // namespace topiary::model
