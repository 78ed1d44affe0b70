#include "worker/compress/prune/plan.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "common/file_util.h"
#include "testing/page_cache.h"
#include "testing/test_util.h"
#include "worker/compress/importance/activation_stats.h"
#include "worker/model/checkpoint.h"

namespace topiary::compress {
namespace {

using topiary::testing::TinyConfig;

Scores RandomScores(const model::ModelConfig& c) {
  Scores s;
  s.heads = at::rand({c.num_hidden_layers, c.num_attention_heads});
  s.kv_groups = at::rand({c.num_hidden_layers, c.num_key_value_heads});
  s.neurons = at::rand({c.num_hidden_layers, c.intermediate_size});
  s.channels = at::rand({c.hidden_size});
  std::vector<double> bi;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) bi.push_back(static_cast<double>((l * 7) % 5));
  s.depth["block_influence"] = bi;
  return s;
}

TEST(Prune, FullShapeIsAnIdentityOnTheBundledTeacher) {
  torch::NoGradGuard g;
  auto m = model::LoadCheckpoint(topiary::testing::SourceDir() + "/models/kjv-llama-8m", at::kFloat);
  ASSERT_TRUE(m.ok()) << m.status();
  const model::ModelConfig& c = m->config;
  PruneTarget t;
  t.hidden_size = c.hidden_size;
  t.intermediate_size = c.intermediate_size;
  t.num_attention_heads = c.num_attention_heads;
  t.num_key_value_heads = c.num_key_value_heads;
  t.num_hidden_layers = c.num_hidden_layers;
  auto plan = MakePlan(c, RandomScores(c), t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  model::LlamaModel same = ApplyPlan(*m, *plan);
  at::Tensor tokens = at::randint(0, c.vocab_size, {2, 32}, at::kLong);
  EXPECT_TRUE(model::Forward(*m, tokens).equal(model::Forward(same, tokens)));
}

TEST(Prune, KeepsTopUnitsInOriginalOrderAndSlicesConsistently) {
  torch::NoGradGuard g;
  model::ModelConfig c = TinyConfig();  // C 32, FF 64, NH 4, G 2, HS 8, L 3
  c.qkv_bias = true;
  model::LlamaModel m = model::InitModel(c, 2, at::kFloat, 0.2);
  for (auto& b : m.layers) b.q_bias.uniform_(), b.k_bias.uniform_(), b.v_bias.uniform_();
  Scores s = RandomScores(c);
  s.channels = at::arange(32, at::kFloat).flip(0);       // keeps channels 0..23
  s.heads[0] = torch::tensor({0.1f, 0.9f, 0.8f, 0.7f});  // group 0: heads 0,1; group 1: heads 2,3
  PruneTarget t;
  t.hidden_size = 24;
  t.intermediate_size = 40;
  t.num_attention_heads = 2;
  t.num_key_value_heads = 1;
  auto plan = MakePlan(c, s, t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->layers[0].groups, (std::vector<int64_t>{1}));  // L2: group 1 (0.8, 0.7) beats group 0 (0.1, 0.9)
  EXPECT_EQ(plan->layers[0].heads, (std::vector<int64_t>{2, 3}));
  model::LlamaModel p = ApplyPlan(m, *plan);
  EXPECT_EQ(p.layers[0].q_proj.sizes().vec(), (std::vector<int64_t>{16, 24}));
  EXPECT_EQ(p.layers[0].k_proj.sizes().vec(), (std::vector<int64_t>{8, 24}));
  EXPECT_EQ(p.layers[0].o_proj.sizes().vec(), (std::vector<int64_t>{24, 16}));
  EXPECT_EQ(p.layers[2].down_proj.sizes().vec(), (std::vector<int64_t>{24, 40}));
  EXPECT_EQ(p.lm_head.sizes().vec(), (std::vector<int64_t>{97, 24}));
  // Head 2 of layer 0 is q rows 16..23; channel 5 stays column 5.
  EXPECT_TRUE(p.layers[0].q_proj.narrow(0, 0, 8).equal(m.layers[0].q_proj.narrow(0, 16, 8).narrow(1, 0, 24)));
  EXPECT_TRUE(p.layers[0].k_bias.equal(m.layers[0].k_bias.narrow(0, 8, 8)));
  auto neurons = plan->layers[1].neurons;
  EXPECT_TRUE(std::is_sorted(neurons.begin(), neurons.end()));
  EXPECT_TRUE(p.layers[1].up_proj[3].equal(m.layers[1].up_proj[neurons[3]].narrow(0, 0, 24)));
  EXPECT_EQ(model::CountParams(plan->config).total(), [&] {
    int64_t n = 0;
    for (auto& [name, t] : p.NamedParameters()) n += t->numel();
    return n;
  }());
  model::Forward(p, at::randint(0, 97, {1, 5}, at::kLong));  // runs
}

// The streaming path (mapped source, one block at a time) writes exactly what
// the in-memory path computes, and the full shape reproduces the teacher.
TEST(Prune, StreamingCheckpointEqualsInMemoryAndFullShapeIsIdentity) {
  torch::NoGradGuard g;
  const std::string teacher = topiary::testing::SourceDir() + "/models/kjv-llama-8m";
  auto m = model::LoadCheckpoint(teacher, at::kBFloat16);
  ASSERT_TRUE(m.ok()) << m.status();
  const model::ModelConfig& c = m->config;
  at::manual_seed(3);
  Scores s = RandomScores(c);
  PruneTarget t;
  t.hidden_size = 192;
  t.intermediate_size = 512;
  t.num_attention_heads = 4;
  t.num_key_value_heads = 2;
  t.num_hidden_layers = 6;
  auto plan = MakePlan(c, s, t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  topiary::testing::TempDir dir;
  model::SaveOptions so;
  ASSERT_TRUE(PruneCheckpoint(teacher, *plan, dir.File("p"), so).ok());
  auto streamed = model::LoadCheckpoint(dir.File("p"), at::kBFloat16);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  model::LlamaModel in_memory = ApplyPlan(*m, *plan);
  auto a = streamed->NamedParameters(), b = in_memory.NamedParameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(a[i].second->equal(*b[i].second)) << a[i].first;
  // Without fsync (`--no-sync`) the same files, byte for byte, and no temporaries left.
  model::SaveOptions nosync;
  nosync.durable = false;
  ASSERT_TRUE(PruneCheckpoint(teacher, *plan, dir.File("p_nosync"), nosync).ok());
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.model"}) {
    auto x = ReadFileToString(dir.File(std::string("p/") + f)),
         y = ReadFileToString(dir.File(std::string("p_nosync/") + f));
    ASSERT_TRUE(x.ok() && y.ok()) << f;
    EXPECT_TRUE(*x == *y) << f;
  }
  for (const auto& e : std::filesystem::directory_iterator(dir.File("p_nosync"))) {
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  }

  auto full = MakePlan(c, s, PruneTarget{});
  ASSERT_TRUE(PruneCheckpoint(teacher, *full, dir.File("same"), so).ok());
  auto f32 = model::LoadCheckpoint(teacher, at::kFloat), same = model::LoadCheckpoint(dir.File("same"), at::kFloat);
  at::Tensor tokens = at::randint(0, c.vocab_size, {2, 32}, at::kLong);
  EXPECT_TRUE(model::Forward(*f32, tokens).equal(model::Forward(*same, tokens)));
  // A plan for another shape is refused before writing.
  model::ModelConfig other = c;
  other.hidden_size = 512;
  other.intermediate_size = 2048;
  Scores big = RandomScores(other);
  PruneTarget wide;
  wide.hidden_size = 400;
  auto bad = MakePlan(other, big, wide);
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(PruneCheckpoint(teacher, *bad, dir.File("bad"), so).code(), absl::StatusCode::kInvalidArgument);
}

// A width prune writes its output past the page cache, from a cached source
// (which stays cached) and from a cold one; the same bytes either way.
TEST(Prune, AWidthPruneWritesPastThePageCache) {
  torch::NoGradGuard g;
  topiary::testing::TempDir dir;
  const std::string teacher = topiary::testing::SourceDir() + "/models/kjv-llama-8m", src = dir.File("src");
  std::filesystem::copy(teacher, src);
  const std::string src_file = src + "/model.safetensors";
  auto m = model::LoadCheckpoint(src, at::kBFloat16);  // reads it: cached
  ASSERT_TRUE(m.ok()) << m.status();
  at::manual_seed(4);
  PruneTarget t;
  t.hidden_size = 192;
  t.intermediate_size = 512;
  auto plan = MakePlan(m->config, RandomScores(m->config), t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  model::SaveOptions nosync;
  nosync.durable = false;
  const size_t src_pages = std::filesystem::file_size(src_file) / 4096;
  ASSERT_GT(topiary::testing::FilePagesCached(src_file), src_pages * 9 / 10);
  ASSERT_TRUE(PruneCheckpoint(src, *plan, dir.File("warm"), nosync).ok());
  EXPECT_GT(topiary::testing::FilePagesCached(src_file), src_pages * 9 / 10) << "the source left the cache";
  ASSERT_TRUE(topiary::testing::DropFromPageCache(src_file));
  ASSERT_LT(topiary::testing::FilePagesCached(src_file), 8u) << "could not make the source cold";
  ASSERT_TRUE(PruneCheckpoint(src, *plan, dir.File("cold"), nosync).ok());
  const std::string warm_file = dir.File("warm/model.safetensors"), cold_file = dir.File("cold/model.safetensors");
  if (topiary::testing::DirectWritesWork(dir.path())) {
    EXPECT_LE(topiary::testing::FilePagesCached(warm_file), 1u) << "from a cached source: written through the cache";
    EXPECT_LE(topiary::testing::FilePagesCached(cold_file), 1u) << "from a cold source: written through the cache";
  }
  EXPECT_TRUE(*ReadFileToString(warm_file) == *ReadFileToString(cold_file));
}

// Minitron's head residual redistribution, by hand: one KV group of 4 heads
// scored (0.4, 0.9, 0.1, 0.6) ranks 1, 3, 0, 2. Keeping 2: i = 1 pairs with
// rank 4 (head 2), i = 2 with rank 3 (head 0), so q_1 <- 2q_1 - q_2 and
// q_3 <- 2q_3 - q_0. Keeping 3: only i = 3 pairs with rank 4: q_0 <- 2q_0 - q_2.
TEST(Prune, HeadResidualRedistributionByHand) {
  torch::NoGradGuard g;
  model::ModelConfig c = TinyConfig();
  c.num_key_value_heads = 1;
  c.qkv_bias = true;
  model::LlamaModel m = model::InitModel(c, 5, at::kFloat, 0.2);
  for (auto& b : m.layers) b.q_bias.uniform_();
  Scores s = RandomScores(c);
  for (int64_t l = 0; l < 3; ++l) s.heads[l] = torch::tensor({0.4f, 0.9f, 0.1f, 0.6f});
  PruneTarget t;
  t.num_attention_heads = 2;
  t.redistribute_heads = true;
  auto plan = MakePlan(c, s, t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->layers[0].heads, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(plan->layers[0].head_residual, (std::vector<std::pair<int64_t, int64_t>>{{1, 2}, {3, 0}}));
  model::LlamaModel p = ApplyPlan(m, *plan);
  const int64_t HS = c.head_dim;
  auto q = [&](const at::Tensor& w, int64_t h) { return w.narrow(0, h * HS, HS); };
  EXPECT_TRUE(q(p.layers[0].q_proj, 0).allclose(2 * q(m.layers[0].q_proj, 1) - q(m.layers[0].q_proj, 2)));
  EXPECT_TRUE(q(p.layers[0].q_proj, 1).allclose(2 * q(m.layers[0].q_proj, 3) - q(m.layers[0].q_proj, 0)));
  EXPECT_TRUE(q(p.layers[2].q_bias, 1).allclose(2 * q(m.layers[2].q_bias, 3) - q(m.layers[2].q_bias, 0)));
  // o_proj columns are only selected, never redistributed.
  EXPECT_TRUE(p.layers[0].o_proj.equal(
      at::cat({m.layers[0].o_proj.narrow(1, HS, HS), m.layers[0].o_proj.narrow(1, 3 * HS, HS)}, 1)));
  t.num_attention_heads = 3;
  plan = MakePlan(c, s, t);
  EXPECT_EQ(plan->layers[0].head_residual, (std::vector<std::pair<int64_t, int64_t>>{{0, 2}}));
  t.redistribute_heads = false;
  EXPECT_TRUE(MakePlan(c, s, t)->layers[0].head_residual.empty());
}

TEST(Prune, DepthByMetricContiguousAndExplicit) {
  model::ModelConfig c = TinyConfig();
  c.num_hidden_layers = 6;
  Scores s;
  s.depth["block_influence"] = {0.9, 0.1, 0.3, 0.2, 0.8, 0.7};
  PruneTarget t;
  t.num_hidden_layers = 4;
  auto plan = MakePlan(c, s, t);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::vector<int64_t> kept;
  for (auto& l : plan->layers) kept.push_back(l.source);
  EXPECT_EQ(kept, (std::vector<int64_t>{0, 2, 4, 5}));
  t.contiguous = true;  // windows of 2: (1,2)=0.4 (2,3)=0.5 -> drop 1,2
  plan = MakePlan(c, s, t);
  kept.clear();
  for (auto& l : plan->layers) kept.push_back(l.source);
  EXPECT_EQ(kept, (std::vector<int64_t>{0, 3, 4, 5}));
  PruneTarget e;
  e.drop_layers = {5};
  e.drop_attention = {0};
  plan = MakePlan(c, {}, e);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->config.num_hidden_layers, 5);
  EXPECT_FALSE(plan->config.IsIsomorphic());
  EXPECT_FALSE(plan->config.LayerHasAttention(0));
}

TEST(Prune, ValidationNamesTheField) {
  model::ModelConfig c = TinyConfig();
  struct Case {
    std::function<void(PruneTarget&)> edit;
    const char* field;
  };
  std::vector<Case> cases = {
      {[](PruneTarget& t) { t.hidden_size = 64; }, "target.hidden_size"},
      {[](PruneTarget& t) { t.intermediate_size = -3; }, "target.intermediate_size"},
      {[](PruneTarget& t) {
         t.num_attention_heads = 3;
         t.num_key_value_heads = 2;
       },
       "target.num_attention_heads"},
      {[](PruneTarget& t) {
         t.num_attention_heads = 4;
         t.num_key_value_heads = 1;
       },
       "target.num_attention_heads"},
      {[](PruneTarget& t) { t.drop_layers = {3}; }, "target.drop_layers"},
      {[](PruneTarget& t) {
         t.drop_mlp = {1, 1};
       },
       "target.drop_mlp"},
      {[](PruneTarget& t) {
         t.hidden_size = 30;
         t.divisor = 8;
       },
       "target.hidden_size"},
  };
  for (const Case& k : cases) {
    PruneTarget t;
    k.edit(t);
    absl::Status st = ValidateTarget(c, t);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << k.field;
    EXPECT_NE(st.message().find(k.field), std::string::npos) << st.message();
  }
  PruneTarget t;
  t.intermediate_size = 32;
  auto plan = MakePlan(c, {}, t);  // no neuron scores
  EXPECT_NE(plan.status().message().find("neuron"), std::string::npos) << plan.status();
}

}  // namespace
}  // namespace topiary::compress
