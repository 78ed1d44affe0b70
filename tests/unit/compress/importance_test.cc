#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>

#include "testing/test_util.h"
#include "worker/compress/importance/activation_stats.h"
#include "worker/compress/importance/aggregate.h"
#include "worker/compress/importance/depth_metric.h"
#include "worker/compress/importance/estimate.h"
#include "worker/compress/importance/scores_json.h"

namespace topiary::compress {
namespace {

using model::Point;
using topiary::testing::TinyConfig;

TEST(Aggregate, MatchesHandComputation) {
  // Two sequences, three tokens, two units: |x| values.
  at::Tensor x =
      torch::tensor({{{1.0f, 0.0f}, {2.0f, 0.0f}, {3.0f, 3.0f}}, {{4.0f, 1.0f}, {4.0f, 1.0f}, {4.0f, 1.0f}}});
  UnitStats mean_seq(2), l2_seq(2), var_seq(2);
  mean_seq.Add(x, Agg::kMean);  // per sequence: (2, 1) and (4, 1)
  l2_seq.Add(x, Agg::kL2);      // (sqrt 14, 3) and (sqrt 48, sqrt 3)
  var_seq.Add(x, Agg::kVar);    // (2/3, 2) and (0, 0)
  auto near = [](const at::Tensor& t, std::vector<double> v) {
    for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(t[i].item<double>(), v[i], 1e-5) << i;
  };
  near(mean_seq.Score(Agg::kMean), {3.0, 1.0});
  near(mean_seq.Score(Agg::kL2), {std::sqrt(20.0), std::sqrt(2.0)});  // Minitron's default
  near(mean_seq.Score(Agg::kVar), {1.0, 0.0});
  near(l2_seq.Score(Agg::kMean), {(std::sqrt(14.0) + std::sqrt(48.0)) / 2, (3 + std::sqrt(3.0)) / 2});
  near(var_seq.Score(Agg::kL2), {2.0 / 3, 2.0});
}

TEST(Aggregate, PackedStatisticsAddAcrossShards) {
  at::Tensor a = at::rand({3, 5, 4}), b = at::rand({2, 5, 4});
  UnitStats all(4), sa(4), sb(4);
  all.Add(at::cat({a, b}), Agg::kMean);
  sa.Add(a, Agg::kMean);
  sb.Add(b, Agg::kMean);
  UnitStats combined(4);
  combined.SetPacked(sa.Packed() + sb.Packed());
  for (Agg agg : {Agg::kMean, Agg::kL2, Agg::kVar}) {
    EXPECT_TRUE(combined.Score(agg).allclose(all.Score(agg), 1e-5, 1e-6)) << AggName(agg);
  }
}

TEST(ActivationStats, DepthMetricsMatchHandComputation) {
  model::ModelConfig c = TinyConfig();
  c.num_hidden_layers = 2;
  c.hidden_size = 2;
  ActivationStats s(c, {}, MlpActivation::kDownProjInput);
  // One sequence of one token; X0 = (1, 0), X1 = (1, 1) after block 0, X2 = (0, 2) after block 1.
  at::Tensor x0 = torch::tensor({{{1.0f, 0.0f}}}), x1 = torch::tensor({{{1.0f, 1.0f}}}),
             x2 = torch::tensor({{{0.0f, 2.0f}}});
  s.Observe(Point::kBlockInput, 0, x0);
  s.Observe(Point::kAttnResidual, 0, x0);  // attention changed nothing
  s.Observe(Point::kBlockOutput, 0, x1);
  s.Observe(Point::kBlockInput, 1, x1);
  s.Observe(Point::kAttnResidual, 1, x2);
  s.Observe(Point::kBlockOutput, 1, x2);
  auto bi = s.BlockInfluence();
  EXPECT_NEAR(bi[0], 1 - 1 / std::sqrt(2.0), 1e-6);  // cos 45°
  EXPECT_NEAR(bi[1], 1 - 1 / std::sqrt(2.0), 1e-6);
  EXPECT_NEAR(s.RelativeL1()[0], 1.0, 1e-6);                              // |(0,1)|1 / |(1,0)|1
  EXPECT_NEAR(s.RelativeL2()[1], std::sqrt(2.0) / std::sqrt(2.0), 1e-6);  // |(-1,1)| / |(1,1)|
  EXPECT_NEAR(s.AttentionInfluence()[0], 0.0, 1e-6);
  EXPECT_NEAR(s.MlpInfluence()[1], 0.0, 1e-6);  // the MLP left x2 unchanged
  auto ang = s.AngularDistance();
  EXPECT_NEAR(ang[0][0], 0.25, 1e-6);  // 45° / 180°
  EXPECT_NEAR(ang[1][0], 0.5, 1e-6);   // X0 to X2: 90°
}

// A model whose block `identity` is an identity, whose KV group `dead_group`
// of layer 0 outputs zeros, whose neuron `dead_neuron` never fires, and whose
// channel `dead_channel` is zero throughout.
struct Planted {
  model::LlamaModel m;
  int64_t identity = 1, dead_group = 1, dead_neuron = 5, dead_channel = 3;
};

Planted MakePlanted() {
  torch::NoGradGuard g;
  Planted p;
  p.m = model::InitModel(TinyConfig(), 9, at::kFloat, 0.3);
  auto& L = p.m.layers;
  const int64_t HS = p.m.config.head_dim;
  L[p.identity].o_proj.zero_();
  L[p.identity].down_proj.zero_();
  L[0].v_proj.narrow(0, p.dead_group * HS, HS).zero_();
  for (auto& b : L) b.gate_proj[p.dead_neuron].zero_();
  p.m.embed_tokens.select(1, p.dead_channel).zero_();
  for (auto& b : L) {
    b.o_proj[p.dead_channel].zero_();
    b.down_proj[p.dead_channel].zero_();
  }
  return p;
}

TEST(ActivationStats, PlantedUnitsScoreLowest) {
  torch::NoGradGuard g;
  Planted p = MakePlanted();
  ActivationStats s(p.m.config, {}, MlpActivation::kDownProjInput);
  model::ForwardOptions fo;
  fo.observer = &s;
  model::Forward(p.m, at::randint(0, p.m.config.vocab_size, {4, 12}, at::kLong), fo);
  auto bi = s.BlockInfluence();
  EXPECT_NEAR(bi[p.identity], 0.0, 1e-6);
  for (size_t l = 0; l < bi.size(); ++l) {
    if (static_cast<int64_t>(l) != p.identity) {
      EXPECT_GT(bi[l], 1e-3);
    }
  }
  EXPECT_EQ(s.KvGroupScores()[0].argmin().item<int64_t>(), p.dead_group);
  EXPECT_EQ(s.KvGroupScores()[0][p.dead_group].item<float>(), 0.0f);
  for (int64_t l = 0; l < 3; ++l) EXPECT_EQ(s.NeuronScores()[l].argmin().item<int64_t>(), p.dead_neuron);
  EXPECT_EQ(s.ChannelScores().argmin().item<int64_t>(), p.dead_channel);
  EXPECT_EQ(s.ChannelScores()[p.dead_channel].item<float>(), 0.0f);
}

// Scores a model metric on one rank.
absl::StatusOr<std::vector<double>> ModelDepthScores(const char* name, const model::LlamaModel& m,
                                                     const std::vector<data::Batch>& cal, uint64_t seed) {
  auto comm = dist::MakeLocalCommunicator();
  ActivationStats stats(m.config, {}, MlpActivation::kDownProjInput);
  DepthContext ctx{&m, &cal, &stats, comm.get(), seed};
  absl::StatusOr<const DepthMetric*> metric = FindDepthMetric(name);
  if (!metric.ok()) return metric.status();
  return (*metric)->score(ctx);
}

TEST(ModelMetrics, RankTheIdentityBlockLowest) {
  Planted p = MakePlanted();
  std::vector<data::Batch> cal = {{at::randint(0, 97, {2, 10}, at::kLong), at::randint(0, 97, {2, 10}, at::kLong)}};
  for (const char* metric : {"magnitude_l1", "magnitude_l2"}) {
    auto s = ModelDepthScores(metric, p.m, cal, 0);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(std::min_element(s->begin(), s->end()) - s->begin(), p.identity) << metric;
  }
  // Removing the identity block leaves the loss unchanged.
  auto lm = ModelDepthScores("lm_loss", p.m, cal, 0);
  ASSERT_TRUE(lm.ok());
  auto local = dist::MakeLocalCommunicator();
  const double full = *CalibrationLoss(p.m, cal, *local);
  EXPECT_NEAR((*lm)[p.identity], full, 1e-5);
  // (On a random model removing another block may lower the loss too, so
  // only the identity's score is known exactly.)
  auto ppl = ModelDepthScores("perplexity", p.m, cal, 0);
  EXPECT_NEAR((*ppl)[p.identity], std::exp(full), 1e-3);
  auto order = ModelDepthScores("reverse_order", p.m, cal, 0);
  EXPECT_EQ(*order, (std::vector<double>{3, 2, 1}));
  auto r1 = ModelDepthScores("random", p.m, cal, 4), r2 = ModelDepthScores("random", p.m, cal, 4);
  EXPECT_EQ(*r1, *r2);
  EXPECT_NE(*r1, *ModelDepthScores("random", p.m, cal, 5));
  auto taylor = ModelDepthScores("taylor", p.m, cal, 0);
  ASSERT_TRUE(taylor.ok());
  // Zero output projections give zero gradients and zero weights: |g·W| = 0.
  EXPECT_EQ((*taylor)[p.identity], 0.0);
  EXPECT_GT((*taylor)[0], 0.0);
  EXPECT_GT((*taylor)[2], 0.0);
  auto bad = ModelDepthScores("nonsense", p.m, cal, 0);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("block_influence"), std::string::npos);  // lists the known ones
}

// lm_loss shares the prefix of its runs (the stream through blocks 0..i-1 is
// computed once per batch): each score must still be the calibration loss of
// the model with that block removed, built and evaluated on its own.
TEST(ModelMetrics, LmLossIsTheLossOfTheModelWithoutEachBlock) {
  torch::NoGradGuard g;
  model::ModelConfig c = TinyConfig();
  c.num_hidden_layers = 4;
  model::LlamaModel m = model::InitModel(c, 12, at::kFloat, 0.2);
  std::vector<data::Batch> cal = {{at::randint(0, 97, {2, 7}, at::kLong), at::randint(0, 97, {2, 7}, at::kLong)},
                                  {at::randint(0, 97, {3, 5}, at::kLong), at::randint(0, 97, {3, 5}, at::kLong)}};
  auto lm = ModelDepthScores("lm_loss", m, cal, 0);
  ASSERT_TRUE(lm.ok());
  ASSERT_EQ(lm->size(), 4u);
  auto local = dist::MakeLocalCommunicator();
  for (int64_t l = 0; l < 4; ++l) {
    model::LlamaModel without = m;
    without.layers.erase(without.layers.begin() + l);
    without.config.num_hidden_layers = 3;
    EXPECT_NEAR((*lm)[l], *CalibrationLoss(without, cal, *local), 1e-6) << "block " << l;
  }
}

// Magnitude and Taylor by hand: every weight of block l set to the constant
// w_l, so Σ|W| = w_l·N and ‖W‖₂ = w_l·sqrt(N) for N weights per block.
TEST(ModelMetrics, MagnitudeMatchesHandComputation) {
  torch::NoGradGuard g;
  model::LlamaModel m = model::InitModel(TinyConfig(), 3, at::kFloat, 0.1);
  const std::vector<double> w = {0.5, -2.0, 1.0};
  double n = 0;
  for (int64_t l = 0; l < 3; ++l) {
    for (at::Tensor* t :
         std::vector<at::Tensor*>{&m.layers[l].input_norm, &m.layers[l].q_proj, &m.layers[l].k_proj,
                                  &m.layers[l].v_proj, &m.layers[l].o_proj, &m.layers[l].post_norm,
                                  &m.layers[l].gate_proj, &m.layers[l].up_proj, &m.layers[l].down_proj}) {
      t->fill_(w[l]);
      if (l == 0) n += static_cast<double>(t->numel());
    }
  }
  std::vector<data::Batch> cal;
  auto l1 = *ModelDepthScores("magnitude_l1", m, cal, 0);
  auto l2 = *ModelDepthScores("magnitude_l2", m, cal, 0);
  for (int64_t l = 0; l < 3; ++l) {
    EXPECT_NEAR(l1[l], std::abs(w[l]) * n, 1e-6 * n) << l;
    EXPECT_NEAR(l2[l], std::abs(w[l]) * std::sqrt(n), 1e-6 * n) << l;
  }
  // Ordering: block 1 (|w| = 2) > block 2 > block 0.
  EXPECT_GT(l1[1], l1[2]);
  EXPECT_GT(l1[2], l1[0]);
}

// Every registered metric is reachable and scores every layer.
TEST(ModelMetrics, RegistryCoversEveryMetricOfTheDesign) {
  std::set<std::string> names;
  for (const DepthMetric& m : DepthMetrics()) names.insert(m.name);
  for (const char* want :
       {"block_influence", "angular_distance", "relative_l1", "relative_l2", "attention_influence", "mlp_influence",
        "lm_loss", "perplexity", "taylor", "magnitude_l1", "magnitude_l2", "reverse_order", "random"}) {
    EXPECT_TRUE(names.count(want)) << want;
  }
}

TEST(ScoresJson, RoundTripsAndRefusesOtherModels) {
  Planted p = MakePlanted();
  ImportanceResult r;
  r.scores.heads = at::rand({3, 4});
  r.scores.kv_groups = at::rand({3, 2});
  r.scores.neurons = at::rand({3, 64});
  r.scores.channels = at::rand({32});
  r.channels_per_norm = at::rand({7, 32});
  r.scores.depth["block_influence"] = {0.1, 0.2, 0.3};
  r.angular_windows = {{0.1, 0.2, 0.3}, {0.4, 0.5}, {0.6}};
  std::string text = ScoresToJson(p.m.config, r, {"m", "d", {}});
  auto back = ScoresFromJson(text, p.m.config);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->neurons.to(at::kFloat).allclose(r.scores.neurons, 1e-6, 1e-6));
  EXPECT_EQ(back->depth["block_influence"], r.scores.depth["block_influence"]);
  model::ModelConfig other = p.m.config;
  other.intermediate_size = 48;
  auto st = ScoresFromJson(text, other);
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.status().message().find("width.neurons"), std::string::npos) << st.status();
  EXPECT_FALSE(ScoresFromJson("{\"version\": 2}", p.m.config).ok());
}

}  // namespace
}  // namespace topiary::compress
