// Distillation across processes, with the real `topiary distill` command on
// the bundled teacher and a student pruned from it (fp32 compute so that
// sums in a different order stay within a tight tolerance):
//   - 2 ranks (Gloo, ZeRO-1) and 1 rank with the same global batch give the
//     same losses, and each rank holds half the optimizer state;
//   - a run killed with SIGKILL after a checkpoint and resumed starts at the
//     step after its newest checkpoint and reproduces the uninterrupted run's
//     losses exactly from there (a restart at step 0, or a resume without the
//     optimizer's moments, fails it);
//   - --resume where there is no checkpoint says so instead of starting over.
#include <gtest/gtest.h>

#include <filesystem>
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
  int64_t step;
  double loss;
  double grad_norm;
  int64_t state_bytes;
};

std::vector<Step> ReadLog(const std::string& path) {
  std::vector<Step> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object())
      out.push_back({j["step"].get<int64_t>(), j["loss"].get<double>(), j["grad_norm"].get<double>(),
                     j["optimizer_state_bytes"].get<int64_t>()});
  }
  return out;
}

class Distill : public ::testing::Test {
 protected:
  void SetUp() override {
    topiary_ = testing::BinDir() + "/topiary";
    teacher_ = testing::SourceDir() + "/models/kjv-llama-8m";
    student_ = dir_.File("student");
    auto r = testing::RunProcesses(
        {{topiary_, "prune", "--model", teacher_, "--drop-layers", "2,5", "--no-sync", "--out", student_}}, dir_.path(),
        std::chrono::seconds(120));
    ASSERT_EQ(r[0].exit_code, 0) << r[0].output;
  }
  std::vector<std::string> Args(const std::string& out, int steps) {
    return {topiary_,         "distill", "--teacher",     teacher_,
            "--student",      student_,  "--data",        KjvDir() + "/kjv-train.bin",
            "--seq-len",      "64",      "--steps",       std::to_string(steps),
            "--global-batch", "8",       "--micro-batch", "2",
            "--warmup",       "2",       "--lr",          "1e-3",
            "--log-every",    "1",       "--threads",     "1",
            "--dtype",        "fp32",    "--out",         out};
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
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i].loss, b[i].loss, 1e-4 * std::abs(a[i].loss)) << i;
    // The gradient's norm tells a mean over ranks from a sum (AdamW and clipping hide the scale from the loss).
    EXPECT_NEAR(a[i].grad_norm, b[i].grad_norm, 1e-3 * a[i].grad_norm) << i;
  }
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
  // The newest complete checkpoint (a step-N.tmp being written when killed does not count).
  int64_t checkpoint_step = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_.File("killed/checkpoints"))) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0 && name.find('.') == std::string::npos) {
      checkpoint_step = std::max<int64_t>(checkpoint_step, std::stoll(name.substr(5)));
    }
  }
  ASSERT_GE(checkpoint_step, 4);
  ASSERT_LT(checkpoint_step, 8) << "the run finished before it could be killed";
  const size_t logged_before = ReadLog(dir_.File("killed/train_log.jsonl")).size();

  auto resumed_args = with_ckpt(dir_.File("killed"));
  resumed_args.push_back("--resume");
  auto resumed = testing::RunProcesses({resumed_args}, dir_.path(), std::chrono::seconds(300));
  ASSERT_EQ(resumed[0].exit_code, 0) << resumed[0].output;
  auto a = ReadLog(dir_.File("full/train_log.jsonl")), b = ReadLog(dir_.File("killed/train_log.jsonl"));
  ASSERT_EQ(a.size(), 8u);
  ASSERT_GE(b.size(), logged_before);
  // The resumed run's lines: exactly the steps after the checkpoint, each with
  // the uninterrupted run's loss (bit for bit: same data, weights and moments).
  std::vector<Step> resumed_steps(b.begin() + static_cast<std::ptrdiff_t>(logged_before), b.end());
  ASSERT_EQ(resumed_steps.size(), static_cast<size_t>(8 - checkpoint_step)) << resumed[0].output;
  for (size_t i = 0; i < resumed_steps.size(); ++i) {
    const int64_t step = checkpoint_step + 1 + static_cast<int64_t>(i);
    ASSERT_EQ(resumed_steps[i].step, step);
    EXPECT_EQ(resumed_steps[i].loss, a[static_cast<size_t>(step - 1)].loss) << "step " << step;
  }
}

TEST_F(Distill, ResumeWithoutACheckpointSaysSo) {
  auto args = Args(dir_.File("fresh"), 4);
  args.push_back("--resume");
  auto r = testing::RunProcesses({args}, dir_.path(), std::chrono::seconds(120));
  EXPECT_NE(r[0].exit_code, 0);
  EXPECT_NE(r[0].output.find("--resume: no checkpoint in"), std::string::npos) << r[0].output;
  EXPECT_FALSE(std::ifstream(dir_.File("fresh/train_log.jsonl")).good()) << "it trained anyway";
}

}  // namespace
}  // namespace topiary
