#include "worker/model/checkpoint.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "testing/test_util.h"

namespace topiary::model {
namespace {

using topiary::testing::TempDir;
using topiary::testing::TinyConfig;
namespace fs = std::filesystem;

std::string Bytes(const std::string& path) { return *ReadFileToString(path); }

void ExpectSameWeights(LlamaModel& a, LlamaModel& b) {
  auto pa = a.NamedParameters(), pb = b.NamedParameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].first, pb[i].first);
    EXPECT_TRUE(pa[i].second->equal(*pb[i].second)) << pa[i].first;
  }
}

TEST(Checkpoint, SaveLoadSaveIsBitIdentical) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    TempDir dir;
    LlamaModel m = InitModel(TinyConfig(), 7, at::kFloat);
    SaveOptions so;
    so.dtype = dtype;
    ASSERT_TRUE(SaveCheckpoint(m, dir.File("a"), so).ok());
    auto loaded = LoadCheckpoint(dir.File("a"), dtype);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ASSERT_TRUE(SaveCheckpoint(*loaded, dir.File("b"), so).ok());
    EXPECT_EQ(Bytes(dir.File("a/model.safetensors")), Bytes(dir.File("b/model.safetensors")));
    EXPECT_EQ(Bytes(dir.File("a/config.json")), Bytes(dir.File("b/config.json")));
    auto again = LoadCheckpoint(dir.File("b"), dtype);
    ASSERT_TRUE(again.ok());
    ExpectSameWeights(*loaded, *again);
  }
}

TEST(Checkpoint, BundledTeacherRoundTripsBitIdentically) {
  std::string teacher = topiary::testing::SourceDir() + "/models/kjv-llama-8m";
  auto m = LoadCheckpoint(teacher, at::kBFloat16);
  ASSERT_TRUE(m.ok()) << m.status();
  TempDir dir;
  SaveOptions so;
  so.copy_files_from = teacher;
  ASSERT_TRUE(SaveCheckpoint(*m, dir.path(), so).ok());
  EXPECT_EQ(Bytes(teacher + "/model.safetensors"), Bytes(dir.File("model.safetensors")));
  EXPECT_EQ(Bytes(teacher + "/tokenizer.model"), Bytes(dir.File("tokenizer.model")));
}

TEST(Checkpoint, ShardsWithIndexAndLoadsBack) {
  TempDir dir;
  LlamaModel m = InitModel(TinyConfig(), 3, at::kFloat);
  SaveOptions so;
  so.dtype = at::kFloat;
  so.max_shard_bytes = 20000;
  ASSERT_TRUE(SaveCheckpoint(m, dir.path(), so).ok());
  ASSERT_TRUE(fs::exists(dir.File("model.safetensors.index.json")));
  EXPECT_FALSE(fs::exists(dir.File("model.safetensors")));
  auto index = nlohmann::json::parse(Bytes(dir.File("model.safetensors.index.json")));
  EXPECT_EQ(index["weight_map"].size(), m.NamedParameters().size());
  int shard_files = 0;
  for (auto& e : fs::directory_iterator(dir.path())) {
    shard_files += e.path().filename().string().rfind("model-0000", 0) == 0;
  }
  EXPECT_GT(shard_files, 1);
  auto loaded = LoadCheckpoint(dir.path(), at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameWeights(m, *loaded);
  // Saving unsharded into the same directory removes the stale shards.
  so.max_shard_bytes = int64_t{1} << 40;
  ASSERT_TRUE(SaveCheckpoint(m, dir.path(), so).ok());
  EXPECT_FALSE(fs::exists(dir.File("model.safetensors.index.json")));
  int shards = 0;
  for (auto& e : fs::directory_iterator(dir.path())) shards += e.path().extension() == ".safetensors";
  EXPECT_EQ(shards, 1);
}

TEST(Checkpoint, TiedEmbeddingsStayTied) {
  TempDir dir;
  ModelConfig c = TinyConfig();
  c.tie_word_embeddings = true;
  LlamaModel m = InitModel(c, 1, at::kFloat);
  EXPECT_TRUE(m.lm_head.is_same(m.embed_tokens));
  ASSERT_TRUE(SaveCheckpoint(m, dir.path(), {}).ok());
  auto loaded = LoadCheckpoint(dir.path(), at::kFloat);
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(loaded->lm_head.is_same(loaded->embed_tokens));
}

TEST(Checkpoint, RefusesShapesThatDoNotMatchTheConfig) {
  TempDir dir;
  LlamaModel m = InitModel(TinyConfig(), 1, at::kFloat);
  ASSERT_TRUE(SaveCheckpoint(m, dir.path(), {}).ok());
  // Claim a wider MLP in config.json than the weights have.
  ModelConfig wider = TinyConfig();
  wider.intermediate_size = 80;
  ASSERT_TRUE(WriteFileAtomically(dir.File("config.json"), ConfigToJson(wider)).ok());
  auto r = LoadCheckpoint(dir.path(), at::kFloat);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("mlp.gate_proj.weight"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("[64,32]"), std::string::npos) << r.status();
}

TEST(Checkpoint, RefusesMissingTensorsAndFiles) {
  TempDir dir;
  ModelConfig c = TinyConfig();
  LlamaModel m = InitModel(c, 1, at::kFloat);
  ASSERT_TRUE(SaveCheckpoint(m, dir.path(), {}).ok());
  c.num_hidden_layers = 4;  // the checkpoint has 3
  ASSERT_TRUE(WriteFileAtomically(dir.File("config.json"), ConfigToJson(c)).ok());
  auto r = LoadCheckpoint(dir.path(), at::kFloat);
  EXPECT_NE(r.status().message().find("model.layers.3."), std::string::npos) << r.status();
  EXPECT_EQ(LoadCheckpoint(dir.File("nowhere"), at::kFloat).status().code(), absl::StatusCode::kNotFound);
  fs::remove(dir.File("model.safetensors"));
  EXPECT_EQ(LoadCheckpoint(dir.path(), at::kFloat).status().code(), absl::StatusCode::kNotFound);
}

TEST(Checkpoint, IndexRefusesPathsOutsideTheDirectory) {
  TempDir dir;
  LlamaModel m = InitModel(TinyConfig(), 1, at::kFloat);
  ASSERT_TRUE(SaveCheckpoint(m, dir.path(), {}).ok());
  ASSERT_TRUE(WriteFileAtomically(dir.File("model.safetensors.index.json"),
                                  R"({"weight_map": {"model.norm.weight": "../../etc/passwd"}})").ok());
  auto r = LoadCheckpoint(dir.path(), at::kFloat);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("plain file name"), std::string::npos);
}

}  // namespace
}  // namespace topiary::model
