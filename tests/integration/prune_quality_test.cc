// On the bundled teacher: activation-based width pruning to ~57% of the
// parameters keeps a lower held-out loss than random pruning to the same
// shape (Minitron's premise, at our scale). Both losses are recorded as test
// properties and printed.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>

#include "testing/test_util.h"
#include "worker/compress/importance/estimate.h"
#include "worker/compress/prune/plan.h"
#include "worker/eval/perplexity.h"
#include "worker/model/checkpoint.h"

namespace topiary::compress {
namespace {

std::string KjvDir() {
  const char* d = std::getenv("TOPIARY_KJV_DIR");
  return d ? d : "build/kjv";
}

TEST(PruneQuality, ActivationScoresBeatRandomOnTheTeacher) {
  at::set_num_threads(2);
  auto teacher = model::LoadCheckpoint(topiary::testing::SourceDir() + "/models/kjv-llama-8m", at::kFloat);
  ASSERT_TRUE(teacher.ok()) << teacher.status();
  const int64_t V = teacher->config.vocab_size;
  auto train = data::TokenFile::Open(KjvDir() + "/kjv-train.bin", data::TokenFormat::kAuto, V);
  auto val = data::TokenFile::Open(KjvDir() + "/kjv-val.bin", data::TokenFormat::kAuto, V);
  ASSERT_TRUE(train.ok() && val.ok()) << "run scripts/kjv_tokens first";

  ImportanceOptions o;
  o.samples = 64;
  o.seq_len = 256;
  o.extra_depth.clear();
  auto importance = EstimateImportance(*teacher, **train, {0, (*train)->size()}, o);
  ASSERT_TRUE(importance.ok()) << importance.status();

  PruneTarget t;
  t.hidden_size = 192;
  t.intermediate_size = 512;
  t.num_attention_heads = 6;
  t.num_key_value_heads = 3;
  torch::manual_seed(1);
  Scores random;
  random.heads = at::rand_like(importance->scores.heads);
  random.neurons = at::rand_like(importance->scores.neurons);
  random.channels = at::rand_like(importance->scores.channels);

  eval::EvalOptions eo;
  eo.seq_len = 256;
  eo.max_windows = 48;
  auto held_out = [&](const Scores& s) {
    auto plan = MakePlan(teacher->config, s, t);
    EXPECT_TRUE(plan.ok()) << plan.status();
    model::LlamaModel pruned = ApplyPlan(*teacher, *plan);
    auto r = eval::EvaluateLoss(pruned, **val, {0, (*val)->size()}, eo);
    EXPECT_TRUE(r.ok());
    return std::make_pair(r->loss, model::CountParams(plan->config).total());
  };
  auto [act_loss, params] = held_out(importance->scores);
  auto [rand_loss, params2] = held_out(random);
  auto base = eval::EvaluateLoss(*teacher, **val, {0, (*val)->size()}, eo);
  ASSERT_TRUE(base.ok());
  EXPECT_EQ(params, params2);
  double frac = static_cast<double>(params) / model::CountParams(teacher->config).total();
  std::printf("teacher %.3f | activation-pruned %.3f | random-pruned %.3f (held-out loss, %.0f%% of parameters)\n",
              base->loss, act_loss, rand_loss, 100 * frac);
  RecordProperty("teacher_loss", std::to_string(base->loss));
  RecordProperty("activation_loss", std::to_string(act_loss));
  RecordProperty("random_loss", std::to_string(rand_loss));
  EXPECT_LT(act_loss, rand_loss);
  EXPECT_GT(act_loss, base->loss);
}

}  // namespace
}  // namespace topiary::compress
