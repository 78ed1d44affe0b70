// The recoveries beyond plain training: LoRA, hidden-state distillation and
// LLM-Streamline's replacement block.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>

#include "testing/test_util.h"
#include "unit/train/corpus.h"
#include "worker/eval/perplexity.h"
#include "worker/model/checkpoint.h"
#include "worker/train/lora.h"
#include "worker/train/streamline.h"
#include "worker/train/trainer.h"

namespace topiary::train {
namespace {

using topiary::testing::TempDir;
using topiary::testing::TinyConfig;

at::Tensor* Find(NamedTensors& named, const std::string& name) {
  for (auto& [n, t] : named) {
    if (n == name) return t;
  }
  ADD_FAILURE() << "no tensor " << name;
  return nullptr;
}

TrainRecipe SmallRecipe(int64_t steps) {
  TrainRecipe r;
  r.steps = steps;
  r.global_batch = 4;
  r.micro_batch = 4;
  r.seq_len = 16;
  r.lr = 1e-2;
  r.min_lr = 1e-3;
  r.warmup_steps = 0;
  r.log_every = 1;
  r.adamw.weight_decay = 0;
  return r;
}

TEST(Lora, StartsAtTheBaseModelAndMatchesTheFactoredForm) {
  model::LlamaModel base = model::InitModel(TinyConfig(), 1, at::kFloat);
  LoraOptions o;
  o.rank = 4;
  o.alpha = 8;
  auto adapter = LoraAdapter::Create(base, o, 7);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  NamedTensors p = (*adapter)->Parameters();
  EXPECT_EQ(p.size(), 3u * 7 * 2);  // 3 blocks x 7 projections x (A, B)
  // per block, rank 4 x (in + out): q, o (32 + 32), k, v (32 + 16), gate, up, down (32 + 64)
  EXPECT_EQ((*adapter)->ParameterCount(), 3 * 4 * (2 * 64 + 2 * 48 + 3 * 96));
  at::Tensor tokens = at::randint(0, 97, {2, 9}, at::kLong);
  torch::NoGradGuard no_grad;
  // B = 0: the adapted model is the base model.
  EXPECT_TRUE(model::Forward((*adapter)->Apply(base), tokens).equal(model::Forward(base, tokens)));

  // A nonzero update: W' x = W x + (alpha/r) B (A x), the classical LoRA forward.
  Find(p, "lora.1.up.B")->normal_(0, 0.5);
  at::Tensor A = *Find(p, "lora.1.up.A"), B = *Find(p, "lora.1.up.B");
  at::Tensor x = at::randn({5, 32});
  at::Tensor adapted = at::linear(x, (*adapter)->Apply(base).layers[1].up_proj);
  at::Tensor factored = at::linear(x, base.layers[1].up_proj) + at::linear(at::linear(x, A), B) * 2.0;
  EXPECT_TRUE(adapted.allclose(factored, 1e-5, 1e-5));
  EXPECT_FALSE(model::Forward((*adapter)->Apply(base), tokens).allclose(model::Forward(base, tokens)));
}

TEST(Lora, TrainsOnlyTheAdaptersAndTheMergedCheckpointEqualsTheAdaptedModel) {
  TempDir dir;
  auto file = MakeCorpus(dir, 97);
  model::LlamaModel m = model::InitModel(TinyConfig(), 1, at::kFloat);
  model::LlamaModel before = model::InitModel(TinyConfig(), 1, at::kFloat);
  LoraOptions o;
  o.rank = 4;
  o.targets = {"q", "v", "down"};
  auto adapter = LoraAdapter::Create(m, o, 3);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  CrossEntropyObjective ce;
  LoraObjective lora(&ce, adapter->get());
  std::vector<StepMetrics> log;
  TrainRecipe r = SmallRecipe(20);
  absl::Status st = Train(m, lora, {file.get(), {0, 3500}, nullptr, {3500, 4000}}, r, {},
                          [&](const StepMetrics& s) { log.push_back(s); });
  ASSERT_TRUE(st.ok()) << st;
  auto a = m.NamedParameters(), b = before.NamedParameters();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(a[i].second->equal(*b[i].second)) << a[i].first;

  // Export: merge, save, load; the loaded plain model is the adapted model.
  model::LlamaModel merged = (*adapter)->Merge(m);
  model::SaveOptions so;
  so.dtype = at::kFloat;
  ASSERT_TRUE(model::SaveCheckpoint(merged, dir.File("merged"), so).ok());
  auto loaded = model::LoadCheckpoint(dir.File("merged"), at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  at::Tensor tokens = at::randint(0, 97, {2, 16}, at::kLong);
  torch::NoGradGuard no_grad;
  at::Tensor want = model::Forward((*adapter)->Apply(m), tokens);
  EXPECT_TRUE(model::Forward(*loaded, tokens).allclose(want, 1e-5, 1e-5));
  EXPECT_FALSE(model::Forward(m, tokens).allclose(want, 1e-3, 1e-3));
  // The reported evaluation is of the adapted model, not the frozen base.
  eval::EvalOptions eo;
  eo.seq_len = 16;
  eo.max_windows = 32;
  eo.batch_size = 4;
  auto el = eval::EvaluateLoss(*loaded, *file, {3500, 4000}, eo);
  ASSERT_TRUE(el.ok());
  EXPECT_NEAR(el->loss, log.back().eval_loss, 1e-4);
  auto base_loss = eval::EvaluateLoss(m, *file, {3500, 4000}, eo);  // what the adapters improved on
  ASSERT_TRUE(base_loss.ok());
  EXPECT_LT(el->loss, base_loss->loss - 0.05);
}

// The adapters live in the optimizer's master weights: a resumed LoRA run
// continues exactly where the checkpoint left it.
TEST(Lora, ResumesExactlyFromACheckpoint) {
  TempDir dir;
  auto file = MakeCorpus(dir, 97);
  auto run = [&](int64_t steps, bool resume) {
    model::LlamaModel m = model::InitModel(TinyConfig(), 1, at::kFloat);
    auto adapter = std::move(*LoraAdapter::Create(m, {}, 3));
    CrossEntropyObjective ce;
    LoraObjective lora(&ce, adapter.get());
    RunOptions ro;
    ro.checkpoint_dir = dir.File("ckpt");
    ro.checkpoint_every = 2;
    ro.keep_last = 10;
    ro.resume = resume;
    std::vector<double> losses;
    absl::Status st = Train(m, lora, {file.get(), {0, 4000}, nullptr, {}}, SmallRecipe(steps), ro,
                            [&](const StepMetrics& s) { losses.push_back(s.loss); });
    EXPECT_TRUE(st.ok()) << st;
    return losses;
  };
  std::vector<double> full = run(4, false);
  ASSERT_EQ(full.size(), 4u);
  std::filesystem::remove_all(dir.File("ckpt/step-00000004"));
  std::vector<double> tail = run(4, true);
  ASSERT_EQ(tail.size(), 2u);
  EXPECT_DOUBLE_EQ(tail[0], full[2]);
  EXPECT_DOUBLE_EQ(tail[1], full[3]);
}

TEST(Lora, RejectsBadOptionsNamingTheField) {
  model::LlamaModel m = model::InitModel(TinyConfig(), 1, at::kFloat);
  LoraOptions o;
  o.rank = 0;
  EXPECT_NE(LoraAdapter::Create(m, o, 0).status().message().find("lora rank"), std::string::npos);
  o.rank = 33;  // > hidden 32
  EXPECT_NE(LoraAdapter::Create(m, o, 0).status().message().find("exceeds"), std::string::npos);
  o = LoraOptions();
  o.targets = {"q", "qq"};
  EXPECT_NE(LoraAdapter::Create(m, o, 0).status().message().find("'qq'"), std::string::npos);
  o.targets = {"q", "q"};
  EXPECT_NE(LoraAdapter::Create(m, o, 0).status().message().find("twice"), std::string::npos);
  o = LoraOptions();
  o.alpha = 0;
  EXPECT_EQ(LoraAdapter::Create(m, o, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(HiddenState, LossesMatchHandComputation) {
  at::Tensor x = torch::tensor({1.0f, 2.0f, 2.0f}).view({1, 1, 3});
  EXPECT_NEAR(HiddenStateLoss(x, x, HiddenLoss::kCosine).item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(HiddenStateLoss(x, -x, HiddenLoss::kCosine).item<double>(), 2.0, 1e-6);
  at::Tensor y = torch::tensor({0.0f, 2.0f, 2.0f}).view({1, 1, 3});  // cos = 8 / (3 · √8)
  EXPECT_NEAR(HiddenStateLoss(x, y, HiddenLoss::kCosine).item<double>(), 1 - 8 / (3 * std::sqrt(8.0)), 1e-6);
  EXPECT_NEAR(HiddenStateLoss(x, y, HiddenLoss::kMse).item<double>(), 1.0 / 3, 1e-6);
  EXPECT_NEAR(HiddenStateLoss(x * 3, y, HiddenLoss::kCosine).item<double>(),
              HiddenStateLoss(x, y, HiddenLoss::kCosine).item<double>(), 1e-6);  // scale-free
}

// A narrower, shallower student learns a teacher block's output through a
// learned map; the term is reported and falls.
TEST(HiddenState, DistillsThroughALearnedMapWhenWidthsDiffer) {
  TempDir dir;
  auto file = MakeCorpus(dir, 97);
  model::LlamaModel teacher = model::InitModel(TinyConfig(), 1, at::kFloat);
  model::ModelConfig sc = TinyConfig();
  sc.hidden_size = 24;
  sc.num_hidden_layers = 2;
  model::LlamaModel student = model::InitModel(sc, 2, at::kFloat);
  HiddenStateOptions h;
  h.pairs = {{1, 2}};
  h.loss = HiddenLoss::kMse;
  h.weight = 10;
  auto kd = DistillationObjective::Create(&teacher, student, {}, h);
  ASSERT_TRUE(kd.ok()) << kd.status();
  NamedTensors maps = (*kd)->Parameters();
  ASSERT_EQ(maps.size(), 1u);
  EXPECT_EQ(maps[0].second->sizes(), (std::vector<int64_t>{32, 24}));
  at::Tensor map_before = maps[0].second->clone();
  std::vector<StepMetrics> log;
  ASSERT_TRUE(
      Train(student, **kd, {file.get(), {0, 4000}, nullptr, {}}, SmallRecipe(15), {}, [&](const StepMetrics& s) {
        log.push_back(s);
      }).ok());
  EXPECT_GE(log.front().hidden, 0);
  EXPECT_GE(log.front().kl, 0);
  EXPECT_LT(log.back().hidden, log.front().hidden * 0.8);
  EXPECT_NEAR(log.back().loss, log.back().kl + 10 * log.back().hidden, 1e-4);
  EXPECT_FALSE(maps[0].second->equal(map_before));  // the map trained

  h.pairs = {{2, 0}};  // the student has blocks 0 and 1
  auto bad = DistillationObjective::Create(&teacher, student, {}, h);
  EXPECT_NE(bad.status().message().find("hidden_pairs[0]: student block 2"), std::string::npos) << bad.status();
  h.pairs = {{0, 3}};
  EXPECT_NE(DistillationObjective::Create(&teacher, student, {}, h).status().message().find("teacher block 3"),
            std::string::npos);
  // Equal widths: no map to learn.
  h.pairs = {{0, 0}};
  EXPECT_TRUE((*DistillationObjective::Create(&teacher, teacher, {}, h))->Parameters().empty());
}

model::SaveOptions so_fp32() {
  model::SaveOptions so;
  so.dtype = at::kFloat;
  return so;
}

model::ModelConfig FiveBlocks() {
  model::ModelConfig c = TinyConfig();
  c.num_hidden_layers = 5;
  return c;
}

TEST(Streamline, ChoosesTheWindowWhoseInputAndOutputAgree) {
  model::LlamaModel m = model::InitModel(FiveBlocks(), 1, at::kFloat);
  for (int l : {1, 2}) {  // blocks 1 and 2 add nothing to the residual stream
    m.layers[l].o_proj.zero_();
    m.layers[l].down_proj.zero_();
  }
  std::vector<data::Batch> cal{{at::randint(0, 97, {2, 12}, at::kLong), at::randint(0, 97, {2, 12}, at::kLong)}};
  auto best = BestReplacementWindow(m, cal, 2);
  ASSERT_TRUE(best.ok()) << best.status();
  EXPECT_EQ(*best, 1);
  EXPECT_EQ(BestReplacementWindow(m, cal, 5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BestReplacementWindow(m, {}, 2).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Streamline, ReplacementTrainsOneBlockIntoAPlainShorterModel) {
  TempDir dir;
  auto file = MakeCorpus(dir, 97);
  // Weights large enough that every block moves the residual stream.
  model::LlamaModel teacher = model::InitModel(FiveBlocks(), 1, at::kFloat, 0.2);
  model::LlamaModel original = model::InitModel(FiveBlocks(), 1, at::kFloat, 0.2);
  auto student = ReplaceWindow(teacher, 2, 2);
  ASSERT_TRUE(student.ok()) << student.status();
  ASSERT_EQ(student->config.num_hidden_layers, 4);
  EXPECT_TRUE(student->layers[2].q_proj.equal(teacher.layers[2].q_proj));
  EXPECT_NE(student->layers[2].q_proj.data_ptr(), teacher.layers[2].q_proj.data_ptr());  // a copy to train
  EXPECT_EQ(student->layers[3].q_proj.data_ptr(), teacher.layers[4].q_proj.data_ptr());

  ReplacementObjective objective(&teacher, 2, 2);
  RunOptions ro;
  ro.train_blocks = {2};
  std::vector<StepMetrics> log;
  TrainRecipe r = SmallRecipe(30);
  r.lr = 3e-3;
  absl::Status st = Train(*student, objective, {file.get(), {0, 4000}, nullptr, {}}, r, ro,
                          [&](const StepMetrics& s) { log.push_back(s); });
  ASSERT_TRUE(st.ok()) << st;
  auto mean3 = [&](size_t from) { return (log[from].loss + log[from + 1].loss + log[from + 2].loss) / 3; };
  EXPECT_LT(mean3(log.size() - 3), 0.8 * mean3(0));  // per-batch noise is about ±10%
  EXPECT_EQ(log.back().loss, log.back().hidden);
  // Only the replacement block moved; the teacher is untouched.
  EXPECT_FALSE(student->layers[2].q_proj.equal(original.layers[2].q_proj));
  for (int l : {0, 1}) EXPECT_TRUE(student->layers[l].q_proj.equal(original.layers[l].q_proj));
  EXPECT_TRUE(student->layers[3].down_proj.equal(original.layers[4].down_proj));
  EXPECT_TRUE(student->embed_tokens.equal(original.embed_tokens));
  auto t = teacher.NamedParameters(), o = original.NamedParameters();
  for (size_t i = 0; i < t.size(); ++i) EXPECT_TRUE(t[i].second->equal(*o[i].second)) << t[i].first;
  // A plain Llama checkpoint with n − 1 = 1 layer fewer.
  ASSERT_TRUE(model::SaveCheckpoint(*student, dir.File("short"), so_fp32()).ok());
  auto loaded = model::LoadCheckpoint(dir.File("short"), at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config.num_hidden_layers, 4);
  EXPECT_TRUE(loaded->config.IsIsomorphic());

  EXPECT_EQ(ReplaceWindow(teacher, 4, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReplaceWindow(teacher, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  ro.train_blocks = {7};
  EXPECT_NE(Train(*student, objective, {file.get(), {0, 4000}, nullptr, {}}, SmallRecipe(1), ro, nullptr)
                .message()
                .find("train_blocks"),
            std::string::npos);
}

TEST(Trainer, ReportsMfuAgainstTheGivenPeak) {
  TempDir dir;
  auto file = MakeCorpus(dir, 97);
  model::LlamaModel m = model::InitModel(TinyConfig(), 1, at::kFloat);
  RunOptions ro;
  ro.peak_flops = 1e9;
  CrossEntropyObjective ce;
  std::vector<StepMetrics> log;
  ASSERT_TRUE(Train(m, ce, {file.get(), {0, 4000}, nullptr, {}}, SmallRecipe(2), ro, [&](const StepMetrics& s) {
                log.push_back(s);
              }).ok());
  const double want = log.back().tokens_per_second * ce.FlopsPerToken(m.config, 16) / 1e9;
  EXPECT_NEAR(log.back().mfu, want, want * 1e-9);
  EXPECT_GT(log.back().mfu, 0);
}

}  // namespace
}  // namespace topiary::train
