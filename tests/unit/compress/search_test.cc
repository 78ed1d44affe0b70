#include "worker/compress/search/search.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "testing/test_util.h"

namespace topiary::compress {
namespace {

using topiary::testing::TinyConfig;

model::ModelConfig SearchConfig() {
  model::ModelConfig c = TinyConfig();  // C 32, FF 64, NH 4, G 2, L 3
  c.hidden_size = 64;
  c.intermediate_size = 256;
  c.num_hidden_layers = 5;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  return c;
}

TEST(Search, CandidatesObeyTheGridAndTheBudget) {
  model::ModelConfig c = SearchConfig();
  SearchSpace s;
  const int64_t total = model::CountParams(c).total();
  s.budget = total * 7 / 10;
  s.tolerance = 0.05;
  s.hidden_divisor = 8;
  s.ffn_divisor = 32;
  s.max_candidates = 1000;
  auto k = EnumerateCandidates(c, s);
  ASSERT_TRUE(k.ok()) << k.status();
  ASSERT_GT(k->size(), 3u);
  int64_t last_gap = 0;
  for (const Candidate& x : *k) {
    const model::ModelConfig& p = x.config;
    EXPECT_EQ(x.params, model::CountParams(p).total());
    EXPECT_LE(std::abs(x.params - s.budget), 0.05 * s.budget);
    EXPECT_GE(std::abs(x.params - s.budget), last_gap);  // closest first
    last_gap = std::abs(x.params - s.budget);
    EXPECT_GE(p.num_hidden_layers, 4);  // ceil(0.8 * 5)
    EXPECT_GE(p.hidden_size, 0.6 * 64);
    EXPECT_TRUE(p.hidden_size % 8 == 0);
    EXPECT_TRUE(p.intermediate_size % 32 == 0 || p.intermediate_size == 256);
    EXPECT_EQ(p.num_attention_heads % p.num_key_value_heads, 0);
    EXPECT_LE(p.num_attention_heads / p.num_key_value_heads, c.q_per_group());
    EXPECT_TRUE(model::ValidateConfig(p).ok());
  }
  s.max_candidates = 2;
  EXPECT_EQ(EnumerateCandidates(c, s)->size(), 2u);
}

// The analytic count equals the real pruned model's numel, for plain, biased
// and tied models; RankCandidates also checks it on every candidate it prunes.
TEST(Search, AnalyticCountMatchesThePrunedModel) {
  torch::NoGradGuard g;
  for (int variant = 0; variant < 3; ++variant) {
    model::ModelConfig c = SearchConfig();
    if (variant == 1) c.qkv_bias = true;
    if (variant == 2) c.tie_word_embeddings = true;
    model::LlamaModel m = model::InitModel(c, 1, at::kFloat, 0.1);
    Scores sc;
    sc.heads = at::rand({5, 8});
    sc.kv_groups = at::rand({5, 4});
    sc.neurons = at::rand({5, 256});
    sc.channels = at::rand({64});
    sc.depth["block_influence"] = {0.5, 0.1, 0.4, 0.3, 0.2};
    SearchSpace s;
    s.budget = model::CountParams(c).total() * 3 / 4;
    s.hidden_divisor = 16;
    s.ffn_divisor = 64;
    s.max_candidates = 1000;
    auto k = EnumerateCandidates(c, s);
    ASSERT_TRUE(k.ok()) << k.status();
    for (const Candidate& x : *k) {
      auto plan = MakePlan(c, sc, x.target);
      ASSERT_TRUE(plan.ok()) << plan.status();
      model::LlamaModel p = ApplyPlan(m, *plan);
      int64_t real = 0;
      for (auto& [name, t] : p.NamedParameters()) real += t->numel();
      EXPECT_EQ(real, x.params) << "variant " << variant;
    }
  }
}

TEST(Search, BadSpacesNameTheField) {
  model::ModelConfig c = SearchConfig();
  SearchSpace s;
  s.budget = 0;
  EXPECT_NE(ValidateSearchSpace(c, s).message().find("search.params"), std::string::npos);
  s.budget = model::CountParams(c).total() * 2;
  EXPECT_NE(ValidateSearchSpace(c, s).message().find("search.params"), std::string::npos);
  s.budget = 1000;
  s.tolerance = 1.5;
  EXPECT_NE(ValidateSearchSpace(c, s).message().find("search.tolerance"), std::string::npos);
  s.tolerance = 0.05;
  s.min_width = 0;
  EXPECT_NE(ValidateSearchSpace(c, s).message().find("search.min_width"), std::string::npos);
  s.min_width = 0.6;
  s.budget = 10;  // nothing that small on the grid
  auto k = EnumerateCandidates(c, s);
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(k.status().message().find("no shape"), std::string::npos);
}

}  // namespace
}  // namespace topiary::compress
