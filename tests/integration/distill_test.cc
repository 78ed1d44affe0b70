// Distillation across processes, with the real `topiary distill` command on
// the bundled teacher and a student pruned from it (fp32 compute so that
// sums in a different order stay within a tight tolerance):
//   - 2 ranks (Gloo, ZeRO-1) and 1 rank with the same global batch give the
//     same losses, and each rank holds half the optimizer state;
//   - a run killed with SIGKILL after a checkpoint and resumed reproduces the
//     uninterrupted run's losses exactly.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "testing/processes.h"
#include "testing/test_util.h"

namespace topiary {
namespace {

std::string KjvDir() {
  const char* d = std::getenv("TOPIARY_KJV_DIR");
  return d ? d : "build/kjv";
}

struct Step {
  double loss;
  int64_t state_bytes;
};

std::vector<Step> ReadLog(const std::string& path) {
  std::vector<Step> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object()) out.push_back({j["loss"].get<double>(), j["optimizer_state_bytes"].get<int64_t>()});
  }
  return out;
}

class Distill : public ::testing::Test {
 protected:
  void SetUp() override {
    topiary_ = testing::BinDir() + "/topiary";
    teacher_ = testing::SourceDir() + "/models/kjv-llama-8m";
    student_ = dir_.File("student");
    auto r = testing::RunProcesses({{topiary_, "prune", "--model", teacher_, "--drop-layers", "2,5", "--no-sync", "--out", student_}},
                                   dir_.path(), std::chrono::seconds(120));
    ASSERT_EQ(r[0].exit_code, 0) << r[0].output;
  }
  std::vector<std::string> Args(const std::string& out, int steps) {
    return {topiary_, "distill", "--teacher", teacher_, "--student", student_, "--data", KjvDir() + "/kjv-train.bin",
            "--seq-len", "64", "--steps", std::to_string(steps), "--global-batch", "8", "--micro-batch", "2",
            "--warmup", "2", "--lr", "1e-3", "--log-every", "1", "--threads", "1", "--dtype", "fp32",
            "--out", out};
  }
  testing::TempDir dir_;
  std::string topiary_, teacher_, student_;
};

TEST_F(Distill, TwoRanksEqualOneRankWithHalfTheOptimizerState) {
  auto one = testing::RunProcesses({Args(dir_.File("one"), 5)}, dir_.path(), std::chrono::seconds(300));
  ASSERT_EQ(one[0].exit_code, 0) << one[0].output;
  std::vector<std::vector<std::string>> ranks;
  for (int r = 0; r < 2; ++r) {
    auto a = Args(dir_.File("two"), 5);
    for (const char* x : {"--rank", r == 0 ? "0" : "1", "--world-size", "2"}) a.push_back(x);
    a.push_back("--rendezvous");
    a.push_back("file:" + dir_.File("rdzv"));
    ranks.push_back(a);
  }
  auto two = testing::RunProcesses(ranks, dir_.path(), std::chrono::seconds(300));
  ASSERT_EQ(two[0].exit_code, 0) << two[0].output;
  ASSERT_EQ(two[1].exit_code, 0) << two[1].output;
  auto a = ReadLog(dir_.File("one/train_log.jsonl")), b = ReadLog(dir_.File("two/train_log.jsonl"));
  ASSERT_EQ(a.size(), 5u);
  ASSERT_EQ(b.size(), 5u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i].loss, b[i].loss, 1e-4 * std::abs(a[i].loss)) << i;
  EXPECT_NEAR(static_cast<double>(b[0].state_bytes), a[0].state_bytes / 2.0, 16.0);  // padding to the world size
  std::printf("optimizer state per rank: 1 rank %lld bytes, 2 ranks %lld bytes\n",
              static_cast<long long>(a[0].state_bytes), static_cast<long long>(b[0].state_bytes));
  RecordProperty("optimizer_bytes_1_rank", std::to_string(a[0].state_bytes));
  RecordProperty("optimizer_bytes_2_ranks", std::to_string(b[0].state_bytes));
}

TEST_F(Distill, SigkillAndResumeReproducesTheUninterruptedRun) {
  auto with_ckpt = [&](const std::string& out) {
    auto a = Args(out, 8);
    for (const char* x : {"--checkpoint-every", "2"}) a.push_back(x);
    return a;
  };
  auto full = testing::RunProcesses({with_ckpt(dir_.File("full"))}, dir_.path(), std::chrono::seconds(300));
  ASSERT_EQ(full[0].exit_code, 0) << full[0].output;

  pid_t pid = testing::SpawnProcess(with_ckpt(dir_.File("killed")), dir_.File("killed.log"));
  ASSERT_GT(pid, 0);
  const std::string marker = dir_.File("killed/checkpoints/step-00000004/state.json");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (!std::ifstream(marker).good() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";

  auto resumed_args = with_ckpt(dir_.File("killed"));
  resumed_args.push_back("--resume");
  auto resumed = testing::RunProcesses({resumed_args}, dir_.path(), std::chrono::seconds(300));
  ASSERT_EQ(resumed[0].exit_code, 0) << resumed[0].output;
  auto a = ReadLog(dir_.File("full/train_log.jsonl")), b = ReadLog(dir_.File("killed/train_log.jsonl"));
  ASSERT_EQ(a.size(), 8u);
  ASSERT_GE(b.size(), 8u);  // the killed run's own lines, then the resumed ones
  for (size_t i = 0; i < 4; ++i) {  // the resumed run's last four steps
    EXPECT_EQ(a[a.size() - 1 - i].loss, b[b.size() - 1 - i].loss) << "step " << 8 - i;
  }
}

}  // namespace
}  // namespace topiary
