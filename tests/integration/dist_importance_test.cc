// Importance on 2 ranks (two `topiary importance` processes over Gloo on
// loopback, calibration dealt between them) equals importance on 1 rank,
// within fp32 summation-order tolerance, for every width score and every
// depth metric including the model metrics that all-reduce their own sums
// (lm_loss, taylor).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "testing/processes.h"
#include "testing/test_util.h"
#include "worker/compress/importance/scores_json.h"
#include "worker/model/checkpoint.h"

namespace topiary::compress {
namespace {

std::string KjvDir() {
  const char* d = std::getenv("TOPIARY_KJV_DIR");
  return d ? d : "build/kjv";
}

std::vector<std::string> Args(const std::string& out, int rank, int world, const std::string& rdzv) {
  return {testing::BinDir() + "/topiary",
          "importance",
          "--model",
          testing::SourceDir() + "/models/kjv-llama-8m",
          "--data",
          KjvDir() + "/kjv-train.bin",
          "--seq-len",
          "64",
          "--samples",
          "12",
          "--batch",
          "2",
          "--depth",
          "lm_loss,taylor,magnitude_l2,random",
          "--threads",
          "1",
          "--out",
          out,
          "--rank",
          std::to_string(rank),
          "--world-size",
          std::to_string(world),
          "--rendezvous",
          rdzv,
          "--dist-timeout",
          "60"};
}

void ExpectClose(const at::Tensor& a, const at::Tensor& b, const char* what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  EXPECT_TRUE(a.to(at::kDouble).allclose(b.to(at::kDouble), 1e-4, 1e-6))
      << what << ": max diff " << (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(DistImportance, TwoRanksEqualOneRank) {
  testing::TempDir dir;
  auto one = testing::RunProcesses({Args(dir.File("one"), 0, 1, "")}, dir.path(), std::chrono::seconds(300));
  ASSERT_EQ(one[0].exit_code, 0) << one[0].output;
  const std::string rdzv = "file:" + dir.File("rdzv");
  auto two = testing::RunProcesses({Args(dir.File("two"), 0, 2, rdzv), Args(dir.File("two"), 1, 2, rdzv)}, dir.path(),
                                   std::chrono::seconds(300));
  ASSERT_EQ(two[0].exit_code, 0) << two[0].output;
  ASSERT_EQ(two[1].exit_code, 0) << two[1].output;

  auto config = model::LoadConfig(testing::SourceDir() + "/models/kjv-llama-8m");
  ASSERT_TRUE(config.ok());
  auto a = ScoresFromJson(*ReadFileToString(dir.File("one/scores.json")), *config);
  auto b = ScoresFromJson(*ReadFileToString(dir.File("two/scores.json")), *config);
  ASSERT_TRUE(a.ok() && b.ok());
  ExpectClose(a->heads, b->heads, "heads");
  ExpectClose(a->kv_groups, b->kv_groups, "kv_groups");
  ExpectClose(a->neurons, b->neurons, "neurons");
  ExpectClose(a->channels, b->channels, "channels");
  ASSERT_EQ(a->depth.size(), b->depth.size());
  for (const auto& [name, va] : a->depth) {
    ASSERT_TRUE(b->depth.count(name)) << name;
    ExpectClose(torch::tensor(va, at::kDouble), torch::tensor(b->depth.at(name), at::kDouble), name.c_str());
  }
  EXPECT_TRUE(a->depth.count("taylor") && a->depth.count("lm_loss"));
}

}  // namespace
}  // namespace topiary::compress
