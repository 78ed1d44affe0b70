#include <gtest/gtest.h>
#include <torch/torch.h>

#include "testing/test_util.h"
#include "worker/eval/agreement.h"
#include "worker/eval/zero_shot.h"
#include "worker/model/checkpoint.h"

namespace topiary::eval {
namespace {

std::string Teacher() { return testing::SourceDir() + "/models/kjv-llama-8m"; }

TEST(ZeroShot, MalformedLinesNameTheLine) {
  struct Case {
    const char* text;
    const char* phrase;
  };
  for (const Case& k :
       std::vector<Case>{{"{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"label\": 0}\nnot json", "line 2"},
                         {"{\"context\": 3, \"choices\": [\"x\", \"y\"], \"label\": 0}", "context"},
                         {"{\"context\": \"a\", \"choices\": [\"x\"], \"label\": 0}", "choices"},
                         {"{\"context\": \"a\", \"choices\": [\"x\", \"\"], \"label\": 0}", "non-empty"},
                         {"{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"label\": 2}", "label"},
                         {"{\"context\": \"a\", \"choices\": [\"x\", \"y\"]}", "label"},
                         {"\n\n", "no examples"}}) {
    auto r = ParseMcTasks(k.text);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << k.text;
    EXPECT_NE(r.status().message().find(k.phrase), std::string::npos) << r.status();
  }
  auto ok = ParseMcTasks(
      "{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"label\": 1}\n\n"
      "{\"context\": \"b\", \"choices\": [\"x\", \"y\", \"z\"], \"label\": 2}\n",
      1);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->size(), 1u);  // max_examples
}

// The batched, padded scoring equals scoring each choice alone, by hand.
TEST(ZeroShot, BatchedScoresEqualOneChoiceAtATime) {
  auto m = model::LoadCheckpoint(Teacher(), at::kFloat);
  auto tok = data::Tokenizer::Load(Teacher() + "/tokenizer.model");
  ASSERT_TRUE(m.ok() && tok.ok());
  McExample e{"In the beginning God created",
              {" the heaven and the earth.", " earth the and heaven the.", " a very long choice of many words"},
              0};
  std::vector<double> ll = ChoiceLogLikelihoods(*m, **tok, e, 64);
  ASSERT_EQ(ll.size(), 3u);
  torch::NoGradGuard g;
  std::vector<int64_t> ctx = (*tok)->Encode(e.context);
  for (size_t c = 0; c < 3; ++c) {
    std::vector<int64_t> cont = (*tok)->Encode(e.choices[c]), ids = ctx;
    ids.insert(ids.end(), cont.begin(), cont.end());
    at::Tensor logp = at::log_softmax(model::Forward(*m, torch::tensor(ids, at::kLong).unsqueeze(0))[0], -1);
    double want = 0;
    for (size_t i = 0; i < cont.size(); ++i) want += logp[ctx.size() - 1 + i][cont[i]].item<double>();
    EXPECT_NEAR(ll[c], want, 1e-4) << c;
  }
  EXPECT_GT(ll[0], ll[1]);  // the teacher knows Genesis 1:1 from its scramble
}

TEST(Agreement, TeacherAgainstItselfAndAPerturbedCopy) {
  auto t = model::LoadCheckpoint(Teacher(), at::kFloat);
  ASSERT_TRUE(t.ok());
  testing::TempDir dir;
  std::vector<int64_t> ids;
  for (int i = 0; i < 600; ++i) ids.push_back((i * 37) % 4096);
  ASSERT_TRUE(data::WriteTokenFile(dir.File("t.bin"), ids, data::TokenFormat::kU16).ok());
  auto file = data::TokenFile::Open(dir.File("t.bin"), data::TokenFormat::kU16, 4096);
  ASSERT_TRUE(file.ok());
  EvalOptions eo;
  eo.seq_len = 64;
  auto same = EvaluateAgreement(*t, *t, **file, {0, (*file)->size()}, eo);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_NEAR(same->kl, 0.0, 1e-6);
  EXPECT_EQ(same->top1_agreement, 1.0);
  auto plain = EvaluateLoss(*t, **file, {0, (*file)->size()}, eo);
  EXPECT_NEAR(same->student.loss, plain->loss, 1e-6 * plain->loss);
  model::LlamaModel other = model::LoadCheckpoint(Teacher(), at::kFloat).value();
  {
    torch::NoGradGuard g;
    other.layers[3].down_proj.mul_(0.0);
    other.layers[5].o_proj.mul_(-1.0);
  }
  auto diff = EvaluateAgreement(other, *t, **file, {0, (*file)->size()}, eo);
  ASSERT_TRUE(diff.ok());
  EXPECT_GT(diff->kl, 1e-3);
  EXPECT_LT(diff->top1_agreement, 1.0);
  EXPECT_GT(diff->top1_agreement, 0.0);
}

}  // namespace
}  // namespace topiary::eval
