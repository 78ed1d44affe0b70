#include "worker/dist/communicator.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "testing/processes.h"
#include "testing/test_util.h"
#include "worker/dist/gloo_communicator.h"
#include "worker/dist/rendezvous.h"

namespace topiary::dist {
namespace {

using testing::TempDir;

TEST(FileRendezvous, SetGetAndTimeoutNamingTheKey) {
  TempDir dir;
  auto r = OpenFileRendezvous(dir.path() + "/rdzv");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Set("a/b c", std::string("\0\x01xyz", 5)).ok());
  auto v = WaitGet(**r, "a/b c", absl::Seconds(1));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, std::string("\0\x01xyz", 5));
  ASSERT_TRUE((*r)->Set("..", "dots").ok());  // escaped, not the parent directory
  EXPECT_EQ(*WaitGet(**r, "..", absl::Seconds(1)), "dots");
  auto missing = WaitGet(**r, "never", absl::Milliseconds(30));
  EXPECT_TRUE(absl::IsDeadlineExceeded(missing.status()));
  EXPECT_NE(missing.status().message().find("'never'"), std::string::npos);
  EXPECT_FALSE(OpenRendezvous("tcp://x").ok());
}

TEST(LocalCommunicator, CopiesAndChecksShapes) {
  auto c = MakeLocalCommunicator();
  at::Tensor in = at::arange(6, at::kFloat), out = at::empty({6}, at::kFloat);
  ASSERT_TRUE(c->ReduceScatter(in, out).ok());
  EXPECT_TRUE(at::equal(in, out));
  at::Tensor wrong = at::empty({5}, at::kFloat);
  EXPECT_TRUE(absl::IsInvalidArgument(c->AllGather(in, wrong)));
  EXPECT_TRUE(absl::IsInvalidArgument(c->Broadcast(in, 1)));
}

TEST(FaultyCommunicator, FailsFromTheChosenCollectiveOn) {
  auto c = MakeFaultyCommunicator(MakeLocalCommunicator(), 2);
  at::Tensor t = at::ones({2});
  EXPECT_TRUE(c->AllReduce(t).ok());
  EXPECT_TRUE(c->Barrier().ok());
  EXPECT_TRUE(absl::IsUnavailable(c->AllReduce(t)));
  EXPECT_TRUE(absl::IsUnavailable(c->Barrier()));
}

TEST(GlooCommunicator, OneRankInProcessAndBadArguments) {
  TempDir dir;
  auto r = OpenFileRendezvous(dir.path());
  GlooOptions o;
  o.rank = 1;
  o.world_size = 1;
  EXPECT_TRUE(absl::IsInvalidArgument(CreateGlooCommunicator(r->get(), o).status()));
  o.rank = 0;
  auto c = CreateGlooCommunicator(r->get(), o);
  ASSERT_TRUE(c.ok()) << c.status();
  at::Tensor t = at::full({3}, 2.0);
  ASSERT_TRUE((*c)->AllReduce(t).ok());
  EXPECT_TRUE(at::equal(t, at::full({3}, 2.0)));
  at::Tensor strided = at::ones({4, 4}).t();
  EXPECT_TRUE(absl::IsInvalidArgument((*c)->AllReduce(strided)));
}

// Ranks as separate processes on loopback.
std::vector<testing::ProcessResult> RunRanks(int world, int started, const std::string& scenario, int timeout_ms,
                                             const TempDir& dir) {
  std::vector<std::vector<std::string>> argvs;
  for (int r = 0; r < started; ++r) {
    argvs.push_back({testing::BinDir() + "/dist_rank", std::to_string(r), std::to_string(world), dir.path() + "/rdzv",
                     scenario, std::to_string(timeout_ms)});
  }
  return testing::RunProcesses(argvs, dir.path(), std::chrono::seconds(60));
}

class MultiProcess : public ::testing::TestWithParam<int> {};

TEST_P(MultiProcess, EveryCollectiveIsExact) {
  TempDir dir;
  auto res = RunRanks(GetParam(), GetParam(), "collectives", 20000, dir);
  for (size_t r = 0; r < res.size(); ++r) EXPECT_EQ(res[r].exit_code, 0) << "rank " << r << ": " << res[r].output;
}

TEST_P(MultiProcess, ARankThatDiesFailsTheOthers) {
  TempDir dir;
  auto res = RunRanks(GetParam(), GetParam(), "die", 5000, dir);
  for (size_t r = 0; r + 1 < res.size(); ++r) EXPECT_EQ(res[r].exit_code, 0) << "rank " << r << ": " << res[r].output;
  EXPECT_EQ(res.back().exit_code, 3) << res.back().output;
}

TEST_P(MultiProcess, AStalledRankIsADeadlineNotAHang) {
  TempDir dir;
  auto res = RunRanks(GetParam(), GetParam(), "stall", 2000, dir);
  for (size_t r = 0; r + 1 < res.size(); ++r) EXPECT_EQ(res[r].exit_code, 0) << "rank " << r << ": " << res[r].output;
}

TEST_P(MultiProcess, AMissingRankTimesOutTheRendezvous) {
  TempDir dir;
  auto res = RunRanks(GetParam(), GetParam() - 1, "join", 1500, dir);
  for (size_t r = 0; r < res.size(); ++r) {
    EXPECT_EQ(res[r].exit_code, 4) << "rank " << r << ": " << res[r].output;
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, MultiProcess, ::testing::Values(2, 3));

}  // namespace
}  // namespace topiary::dist
