#include "worker/data/sampler.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "testing/test_util.h"

namespace topiary::data {
namespace {

using topiary::testing::TempDir;

class SamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<int64_t> ids(1000);
    for (int i = 0; i < 1000; ++i) ids[i] = i % 251;
    ASSERT_TRUE(WriteTokenFile(dir_.File("t.bin"), ids, TokenFormat::kU16).ok());
    file_ = std::move(*TokenFile::Open(dir_.File("t.bin"), TokenFormat::kU16, 251));
  }
  TempDir dir_;
  std::unique_ptr<TokenFile> file_;
};

TEST_F(SamplerTest, DeterministicForASeedAndShiftedTargets) {
  auto a = SequenceSampler::Create(file_.get(), {0, 1000}, 16, 5);
  auto b = SequenceSampler::Create(file_.get(), {0, 1000}, 16, 5);
  ASSERT_TRUE(a.ok() && b.ok());
  auto ba = a->Sequences({0, 1, 2, 100}), bb = b->Sequences({0, 1, 2, 100});
  ASSERT_TRUE(ba.ok() && bb.ok());
  EXPECT_TRUE(ba->inputs.equal(bb->inputs));
  EXPECT_TRUE(ba->inputs.narrow(1, 1, 15).equal(ba->targets.narrow(1, 0, 15)));
  auto c = SequenceSampler::Create(file_.get(), {0, 1000}, 16, 6);
  EXPECT_FALSE(c->Sequences({0, 1, 2, 100})->inputs.equal(ba->inputs));
}

TEST_F(SamplerTest, EpochCoversDisjointWindows) {
  auto s = SequenceSampler::Create(file_.get(), {0, 1000}, 16, 1);
  ASSERT_TRUE(s.ok());
  int64_t n = s->windows_per_epoch();
  std::set<int64_t> starts;
  for (int64_t i = 0; i < n; ++i) starts.insert(s->Start(i));
  EXPECT_EQ(static_cast<int64_t>(starts.size()), n);
  for (int64_t st : starts) {
    EXPECT_GE(st, 0);
    EXPECT_LE(st + 17, 1000);
  }
}

TEST_F(SamplerTest, RankShardsAreDisjointAndCoverTheGlobalBatch) {
  auto s = SequenceSampler::Create(file_.get(), {0, 1000}, 8, 3);
  ASSERT_TRUE(s.ok());
  auto full = s->GlobalBatchShard(4, 6, 0, 1);
  auto r0 = s->GlobalBatchShard(4, 6, 0, 2), r1 = s->GlobalBatchShard(4, 6, 1, 2);
  ASSERT_TRUE(full.ok() && r0.ok() && r1.ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(full->inputs[2 * i].equal(r0->inputs[i]));
    EXPECT_TRUE(full->inputs[2 * i + 1].equal(r1->inputs[i]));
  }
  EXPECT_FALSE(s->GlobalBatchShard(0, 5, 0, 2).ok());
}

TEST_F(SamplerTest, ErrorsAndEvalWindows) {
  EXPECT_FALSE(SequenceSampler::Create(file_.get(), {0, 1000}, 1000, 0).ok());  // needs T+1 tokens
  EXPECT_FALSE(SequenceSampler::Create(file_.get(), {0, 2000}, 8, 0).ok());
  auto w = EvalWindowStarts({0, 1000}, 100, 0);
  EXPECT_EQ(w.size(), 9u);  // the 10th window would need token 1000
  EXPECT_EQ(w[1], 100);
  EXPECT_EQ(EvalWindowStarts({0, 1000}, 100, 3).size(), 3u);
  auto split = SplitHeldOut(1000, 0.1);
  ASSERT_TRUE(split.ok());
  EXPECT_EQ(split->first.end, 900);
  EXPECT_EQ(split->second.begin, 900);
  EXPECT_FALSE(SplitHeldOut(10, 1.5).ok());
}

}  // namespace
}  // namespace topiary::data
