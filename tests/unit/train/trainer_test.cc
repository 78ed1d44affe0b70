#include "worker/train/trainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <torch/torch.h>

#include "testing/test_util.h"
#include "unit/train/corpus.h"
#include "worker/eval/perplexity.h"

namespace topiary::train {
namespace {

using topiary::testing::TempDir;
using topiary::testing::TinyConfig;

TEST(Trainer, LossFallsAndRunsAreReproducible) {
  TempDir dir;
  auto file = MakeCorpus(dir, 97);
  TrainRecipe r;
  r.steps = 30;
  r.global_batch = 8;
  r.micro_batch = 4;
  r.seq_len = 32;
  r.lr = 3e-3;
  r.min_lr = 3e-4;
  r.warmup_steps = 5;
  r.log_every = 1;
  TrainData td{file.get(), {0, 3500}, nullptr, {3500, 4000}};
  auto run = [&](at::ScalarType dtype) {
    model::LlamaModel m = model::InitModel(TinyConfig(), 1, dtype);
    std::vector<StepMetrics> log;
    absl::Status st = TrainCausalLm(m, td, r, [&](const StepMetrics& s) { log.push_back(s); });
    EXPECT_TRUE(st.ok()) << st;
    return log;
  };
  auto a = run(at::kFloat);
  ASSERT_EQ(a.size(), 30u);
  EXPECT_LT(a.back().loss, a.front().loss - 1.0);
  EXPECT_GT(a.back().eval_loss, 0);
  EXPECT_LT(a.back().eval_loss, std::log(97.0) - 1.0);
  auto b = run(at::kFloat);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_DOUBLE_EQ(a[i].loss, b[i].loss) << "step " << i;
  auto h = run(at::kBFloat16);
  EXPECT_LT(h.back().loss, h.front().loss - 1.0);
}

// Partial-layer tuning trains the last block, the final norm and lm_head
// only; every other weight stays bit-identical.
TEST(Trainer, PartialLayerTuningFreezesTheRest) {
  TempDir dir;
  auto file = MakeCorpus(dir, 97);
  TrainRecipe r;
  r.steps = 3;
  r.global_batch = 4;
  r.micro_batch = 4;
  r.seq_len = 16;
  r.warmup_steps = 0;
  model::LlamaModel m = model::InitModel(TinyConfig(), 1, at::kFloat);
  model::LlamaModel before = model::InitModel(TinyConfig(), 1, at::kFloat);
  RunOptions o;
  o.train_last_blocks = 1;
  auto names = TrainableParameters(m, o);
  EXPECT_EQ(std::count(names.begin(), names.end(), "lm_head.weight"), 1);
  EXPECT_EQ(std::count(names.begin(), names.end(), "model.norm.weight"), 1);
  EXPECT_EQ(std::count(names.begin(), names.end(), "model.layers.2.mlp.down_proj.weight"), 1);
  EXPECT_EQ(std::count(names.begin(), names.end(), "model.layers.1.mlp.down_proj.weight"), 0);
  CrossEntropyObjective ce;
  ASSERT_TRUE(Train(m, ce, {file.get(), {0, 4000}, nullptr, {}}, r, o, nullptr).ok());
  auto a = m.NamedParameters(), b = before.NamedParameters();
  for (size_t i = 0; i < a.size(); ++i) {
    const bool trained = std::count(names.begin(), names.end(), a[i].first) > 0;
    EXPECT_EQ(a[i].second->equal(*b[i].second), !trained) << a[i].first;
  }
  o.train_last_blocks = 9;
  EXPECT_EQ(Train(m, ce, {file.get(), {0, 4000}, nullptr, {}}, r, o, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Trainer, AccumulationMatchesOneBigBatch) {
  TempDir dir;
  auto file = MakeCorpus(dir, 97);
  TrainRecipe r;
  r.steps = 3;
  r.global_batch = 8;
  r.seq_len = 16;
  r.warmup_steps = 0;
  TrainData td{file.get(), {0, 4000}, nullptr, {}};
  std::vector<double> losses[2], norms[2];
  for (int i = 0; i < 2; ++i) {
    r.micro_batch = i == 0 ? 8 : 2;
    model::LlamaModel m = model::InitModel(TinyConfig(), 1, at::kFloat);
    r.log_every = 1;
    ASSERT_TRUE(TrainCausalLm(m, td, r, [&](const StepMetrics& s) {
                  losses[i].push_back(s.loss);
                  norms[i].push_back(s.grad_norm);
                }).ok());
  }
  for (int s = 0; s < 3; ++s) {
    EXPECT_NEAR(losses[0][s], losses[1][s], 1e-4) << "step " << s;
    // AdamW hardly sees the gradient's scale: its norm tells a mean over micro-batches from a sum.
    EXPECT_NEAR(norms[0][s], norms[1][s], 1e-4 * norms[0][s]) << "step " << s;
  }
}

TEST(Trainer, RejectsBadRecipesNamingTheField) {
  TrainRecipe r;
  r.global_batch = 10;
  r.micro_batch = 4;
  absl::Status st = ValidateRecipe(r);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("global_batch"), std::string::npos);
  r = TrainRecipe();
  r.min_lr = 1.0;
  EXPECT_NE(ValidateRecipe(r).message().find("min_lr"), std::string::npos);
}

TEST(Trainer, NonFiniteLossStopsWithAClearError) {
  TempDir dir;
  auto file = MakeCorpus(dir, 97);
  TrainRecipe r;
  r.steps = 5;
  r.global_batch = 4;
  r.micro_batch = 4;
  r.seq_len = 16;
  model::LlamaModel m = model::InitModel(TinyConfig(), 1, at::kFloat);
  m.norm.fill_(std::numeric_limits<float>::quiet_NaN());
  absl::Status st = TrainCausalLm(m, {file.get(), {0, 4000}, nullptr, {}}, r, nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_NE(st.message().find("step 1"), std::string::npos) << st;
}

TEST(Eval, PerplexityOfUniformModelIsVocabSize) {
  TempDir dir;
  auto file = MakeCorpus(dir, 97);
  model::LlamaModel m = model::InitModel(TinyConfig(), 1, at::kFloat);
  m.lm_head.zero_();  // all logits equal: uniform prediction
  eval::EvalOptions eo;
  eo.seq_len = 50;
  eo.max_windows = 7;
  auto r = eval::EvaluateLoss(m, *file, {0, 4000}, eo);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->perplexity, 97.0, 1e-3);
  EXPECT_EQ(r->tokens, 7 * 50);
  EXPECT_EQ(r->windows, 7);
}

}  // namespace
}  // namespace topiary::train
