// Pruning streams: `topiary prune` on a ~210 MB bf16 checkpoint must peak at
// no more than the process's own footprint plus the model once (the mapped
// source) plus one tensor. The in-memory path (load, slice, save) peaks near
// twice the model and fails this. Memory, not time: no timing is asserted.
#include <gtest/gtest.h>

#include <cstdio>

#include "testing/processes.h"
#include "testing/test_util.h"

namespace topiary {
namespace {

TEST(PruneMemory, PeakIsTheModelOncePlusOneTensor) {
  testing::TempDir dir;
  // 107M parameters: embed and lm_head 8000x1024 (8.2M each), 6 blocks of 15.2M.
  ASSERT_TRUE(WriteFileAtomically(dir.File("config.json"), R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1024,
    "intermediate_size": 4096, "num_attention_heads": 16, "num_key_value_heads": 4, "num_hidden_layers": 6,
    "vocab_size": 8000, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16"})").ok());
  const std::string topiary = testing::BinDir() + "/topiary";
  auto init = testing::RunProcesses({{topiary, "init", "--config", dir.File("config.json"), "--out",
                                      dir.File("big"), "--dtype", "bf16"}},
                                    dir.path(), std::chrono::seconds(300));
  ASSERT_EQ(init[0].exit_code, 0) << init[0].output;
  auto base = testing::RunProcesses({{topiary, "inspect", "--model", dir.File("big")}}, dir.path(),
                                    std::chrono::seconds(60));
  ASSERT_EQ(base[0].exit_code, 0) << base[0].output;
  auto prune = testing::RunProcesses(
      {{topiary, "prune", "--model", dir.File("big"), "--drop-layers", "1,3", "--out", dir.File("pruned")}},
      dir.path(), std::chrono::seconds(300));
  ASSERT_EQ(prune[0].exit_code, 0) << prune[0].output;
  const int64_t model_kb = 2 * (2 * 8000 * 1024 + 6 * (1024 * 1024 * 2 + 256 * 1024 * 2 + 3 * 1024 * 4096 + 2 * 1024) +
                                1024) / 1024;
  const int64_t largest_tensor_kb = 2 * 8000 * 1024 / 1024;
  const int64_t allowed_kb = base[0].max_rss_kb + model_kb + largest_tensor_kb + 32 * 1024;
  std::printf("peak RSS: prune %lld KB; inspect %lld KB; model %lld KB; allowed %lld KB\n",
              static_cast<long long>(prune[0].max_rss_kb), static_cast<long long>(base[0].max_rss_kb),
              static_cast<long long>(model_kb), static_cast<long long>(allowed_kb));
  RecordProperty("prune_peak_rss_kb", std::to_string(prune[0].max_rss_kb));
  EXPECT_LE(prune[0].max_rss_kb, allowed_kb);
}

}  // namespace
}  // namespace topiary
