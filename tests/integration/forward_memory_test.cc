// Forward-only commands hold the model once: `topiary eval --dtype bf16` of a
// bf16 checkpoint uses the mapped files in place (no copy), and fp32 compute
// (`eval --dtype fp32`, `importance`) of a bf16 model widens one weight at a
// time instead of the whole model. The copying loader peaked at the model
// twice (bf16) or three times (fp32 over bf16) and fails these bounds. A
// distillation that cannot fit is refused up front, naming its estimate.
// Memory, not time: no timing is asserted.
#include <gtest/gtest.h>

#include <filesystem>

#include "testing/processes.h"
#include "testing/test_util.h"

namespace topiary {
namespace {

class ForwardMemory : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(testing::WriteMemoryTestInputs(dir_.path()));  // a 107M bf16 config (214 MB) and tokens
    Run({"init", "--config", dir_.File("config.json"), "--out", dir_.File("big"), "--dtype", "bf16"});
  }

  testing::ProcessResult Run(std::vector<std::string> args, int want_exit = 0) {
    args.insert(args.begin(), testing::BinDir() + "/topiary");
    auto r = testing::RunProcesses({args}, dir_.path(), std::chrono::seconds(300));
    EXPECT_EQ(r[0].exit_code, want_exit) << r[0].output;
    return r[0];
  }
  double PeakMb(const std::vector<std::string>& args) { return static_cast<double>(Run(args).max_rss_kb) / 1000.0; }

  std::vector<std::string> Eval(const std::string& model, const std::string& dtype) {
    return {"eval",
            "--model",
            model,
            "--data",
            dir_.File("tokens.bin"),
            "--data-format",
            "u16",
            "--dtype",
            dtype,
            "--seq-len",
            "16",
            "--max-windows",
            "2",
            "--batch",
            "2"};
  }

  testing::TempDir dir_;
  const std::string small_ = testing::SourceDir() + "/models/kjv-llama-8m";  // 17 MB: the process's own footprint
  static constexpr double kModelMb = 107.4e6 * 2 / 1e6;
  static constexpr double kBlockFp32Mb = 15.2e6 * 4 / 1e6;
};

TEST_F(ForwardMemory, Bf16EvalUsesTheMappedModelInPlace) {
  const double base = PeakMb(Eval(small_, "bf16")), peak = PeakMb(Eval(dir_.File("big"), "bf16"));
  std::printf("eval bf16 peak RSS %.0f MB; baseline %.0f MB; model %.0f MB\n", peak, base, kModelMb);
  EXPECT_LE(peak, base + 1.15 * kModelMb);  // a copy beside the mapping would be 2x
}

TEST_F(ForwardMemory, Fp32ComputeOfABf16ModelWidensOneWeightAtATime) {
  const double base = PeakMb(Eval(small_, "fp32")), peak = PeakMb(Eval(dir_.File("big"), "fp32"));
  std::printf("eval fp32 peak RSS %.0f MB; baseline %.0f MB; model %.0f MB\n", peak, base, kModelMb);
  EXPECT_LE(peak, base + 1.15 * kModelMb + 2 * kBlockFp32Mb);  // widening the whole model would be 3x

  const double imp_base =
      PeakMb({"importance", "--model", small_, "--data", dir_.File("tokens.bin"), "--data-format", "u16", "--samples",
              "2", "--batch", "2", "--seq-len", "16", "--out", dir_.File("imp_small")});
  const double imp =
      PeakMb({"importance", "--model", dir_.File("big"), "--data", dir_.File("tokens.bin"), "--data-format", "u16",
              "--samples", "2", "--batch", "2", "--seq-len", "16", "--out", dir_.File("imp")});
  std::printf("importance peak RSS %.0f MB; baseline %.0f MB\n", imp, imp_base);
  EXPECT_LE(imp, imp_base + 1.15 * kModelMb + 2 * kBlockFp32Mb);
}

TEST_F(ForwardMemory, DistillationThatCannotFitIsRefusedWithItsEstimate) {
  auto r = Run({"distill",
                "--teacher",
                dir_.File("big"),
                "--student",
                dir_.File("big"),
                "--data",
                dir_.File("tokens.bin"),
                "--data-format",
                "u16",
                "--seq-len",
                "16",
                "--steps",
                "1",
                "--global-batch",
                "2",
                "--micro-batch",
                "2",
                "--memory-budget",
                "300MB",
                "--out",
                dir_.File("kd")},
               1);
  EXPECT_NE(r.output.find("distillation needs an estimated"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("teacher 215 MB"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("300 MB is available"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir_.File("kd/model.safetensors")));
}

}  // namespace
}  // namespace topiary
