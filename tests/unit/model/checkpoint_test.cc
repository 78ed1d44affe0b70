#include "worker/model/checkpoint.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>

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

// A selection (rows and columns of a bigger matrix, in any order) is written
// as the matrix index_select would give: gathered piece by piece when its
// dtype is the output's (embed_tokens here is 12 MB: three 4 MB pieces),
// materialised and converted when it is not (lm_head, bf16 into fp32).
TEST(Checkpoint, SelectionsAreWrittenAsTheirIndexedMatrix) {
  torch::NoGradGuard g;
  ModelConfig c = TinyConfig();
  c.vocab_size = 6000;
  c.hidden_size = 512;
  c.num_attention_heads = 4;
  c.head_dim = 128;
  const at::Tensor big = at::randn({c.vocab_size + 900, c.hidden_size + 200});
  const at::Tensor big16 = big.to(at::kBFloat16);
  auto pick = [](int64_t n, int64_t k, uint64_t seed) {  // k of n, shuffled: no order to rely on
    at::Tensor perm = at::randperm(n, at::make_generator<at::CPUGeneratorImpl>(seed), at::kLong).narrow(0, 0, k);
    return std::vector<int64_t>(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + k);
  };
  std::vector<int64_t> rows = pick(big.size(0), c.vocab_size, 1), cols = pick(big.size(1), c.hidden_size, 2);
  // Runs of consecutive rows too (the kept rows of a prune are mostly in order).
  std::sort(rows.begin() + 1000, rows.begin() + 3000);
  LlamaModel ref = InitModel(c, 7, at::kFloat);
  auto params = ref.NamedParameters();
  SaveOptions so;
  so.dtype = at::kFloat;
  TempDir dir;
  ASSERT_TRUE(SaveCheckpointStreaming(
                  c,
                  [&](size_t i) -> absl::StatusOr<ProducedTensor> {
                    if (params[i].first == "model.embed_tokens.weight") return ProducedTensor::Select(big, rows, cols);
                    if (params[i].first == "lm_head.weight") return ProducedTensor::Select(big16, rows, cols);
                    return *params[i].second;
                  },
                  dir.File("m"), so)
                  .ok());
  auto loaded = LoadCheckpoint(dir.File("m"), at::kFloat);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const at::Tensor r = at::tensor(rows, at::kLong), k = at::tensor(cols, at::kLong);
  EXPECT_TRUE(loaded->embed_tokens.equal(big.index_select(0, r).index_select(1, k)));
  EXPECT_TRUE(loaded->lm_head.equal(big16.index_select(0, r).index_select(1, k).to(at::kFloat)));
  EXPECT_TRUE(loaded->layers[1].q_proj.equal(ref.layers[1].q_proj));
  // A selection outside its source is refused, not read.
  std::vector<int64_t> outside = rows;
  outside[5] = big.size(0);
  auto refused = SaveCheckpointStreaming(
      c,
      [&](size_t i) -> absl::StatusOr<ProducedTensor> {
        if (i == 0) return ProducedTensor::Select(big, outside, cols);
        return *params[i].second;
      },
      dir.File("bad"), so);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInternal);
  EXPECT_NE(refused.message().find("selects outside"), std::string::npos) << refused;
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
                                  R"({"weight_map": {"model.norm.weight": "../../etc/passwd"}})")
                  .ok());
  auto r = LoadCheckpoint(dir.path(), at::kFloat);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("plain file name"), std::string::npos);
}

// The file mapped at `p` in this process ("" when `p` is in anonymous memory).
std::string MappedFileAt(const void* p) {
  std::ifstream maps("/proc/self/maps");
  const auto addr = reinterpret_cast<uintptr_t>(p);
  std::string line;
  while (std::getline(maps, line)) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2 || addr < lo || addr >= hi) continue;
    const size_t slash = line.find('/');
    return slash == std::string::npos ? "" : line.substr(slash);
  }
  return "";
}

// A tiny random model saved in `dtype`.
bool SaveTiny(const std::string& dir, uint64_t seed, at::ScalarType dtype) {
  LlamaModel m = InitModel(TinyConfig(), seed, at::kFloat);
  SaveOptions so;
  so.dtype = dtype;
  return SaveCheckpoint(m, dir, so).ok();
}

// Resident bytes of this process's mappings of `path` (/proc/self/smaps).
int64_t MappedResidentBytes(const std::string& path) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in = false;
  int64_t kb = 0;
  while (std::getline(smaps, line)) {
    if (line.find('-') != std::string::npos && line.find(':') != 0 && std::isxdigit(line[0]) &&
        line.find(" ") < line.find(':')) {
      in = line.size() >= path.size() && line.compare(line.size() - path.size(), path.size(), path) == 0;
    } else if (in && line.rfind("Rss:", 0) == 0) {
      kb += std::stoll(line.substr(4));
    }
  }
  return kb * 1024;
}

// A random fp32 model with a 12 MB embedding (several 4 MiB read runs),
// saved into dir/src and mapped back (`loaded`, from `file`).
class MappedCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    c.vocab_size = 6000, c.hidden_size = 512, c.num_attention_heads = 4, c.head_dim = 128;
    so.dtype = at::kFloat;
    LlamaModel src = InitModel(c, 5, at::kFloat);
    ASSERT_TRUE(SaveCheckpoint(src, dir.File("src"), so).ok());
    auto mapped = MapCheckpoint(dir.File("src"));
    ASSERT_TRUE(mapped.ok()) << mapped.status();
    loaded.emplace(*std::move(mapped));
    file = fs::canonical(dir.File("src/model.safetensors")).string();
  }

  torch::NoGradGuard no_grad;
  ModelConfig c = TinyConfig();
  TempDir dir;
  SaveOptions so;
  std::optional<LlamaModel> loaded;
  std::string file;
};

// A selection of a tensor of a loaded checkpoint (mapped from its file) is
// read from the file into a staging buffer, run by run of increasing rows
// (a 12 MB tensor: several runs), not through the mapping, and is written
// as index_select gives it, rows in any order, columns sorted or not.
TEST_F(MappedCheckpoint, SelectionsAreReadFromItsFile) {
  ASSERT_EQ(MappedFileAt(loaded->embed_tokens.data_ptr()), file);
  ModelConfig small = c;
  small.vocab_size = 4000, small.hidden_size = 384;
  at::Tensor order = at::randperm(c.vocab_size, at::make_generator<at::CPUGeneratorImpl>(3), at::kLong);
  std::vector<int64_t> rows(order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + small.vocab_size);
  std::sort(rows.begin() + 100, rows.end() - 100);  // mostly increasing, with gaps, like a prune's
  std::vector<int64_t> sorted_cols, unsorted_cols;
  for (int64_t j = 0; j < c.hidden_size; ++j) {
    if (j % 4 != 1) sorted_cols.push_back(j);
  }
  unsorted_cols = sorted_cols;
  std::reverse(unsorted_cols.begin(), unsorted_cols.end());
  LlamaModel rest = InitModel(small, 7, at::kFloat);
  auto params = rest.NamedParameters();
  const int64_t resident_before = MappedResidentBytes(file);
  ASSERT_TRUE(SaveCheckpointStreaming(
                  small,
                  [&](size_t i) -> absl::StatusOr<ProducedTensor> {
                    if (params[i].first == "model.embed_tokens.weight") {
                      return ProducedTensor::Select(loaded->embed_tokens, rows, sorted_cols);
                    }
                    if (params[i].first == "lm_head.weight") {
                      return ProducedTensor::Select(loaded->lm_head, rows, unsorted_cols);
                    }
                    return *params[i].second;
                  },
                  dir.File("out"), so)
                  .ok());
  const int64_t mapped_in = MappedResidentBytes(file) - resident_before;
  EXPECT_LT(mapped_in, loaded->embed_tokens.nbytes() / 8) << "the selections were read through the mapping";
  auto out = LoadCheckpoint(dir.File("out"), at::kFloat);
  ASSERT_TRUE(out.ok()) << out.status();
  const at::Tensor r = at::tensor(rows, at::kLong);
  EXPECT_TRUE(
      out->embed_tokens.equal(loaded->embed_tokens.index_select(0, r).index_select(1, at::tensor(sorted_cols))));
  EXPECT_TRUE(out->lm_head.equal(loaded->lm_head.index_select(0, r).index_select(1, at::tensor(unsorted_cols))));
}

// Saved direct (past the page cache), a mapped checkpoint is written byte for
// byte as it was, its matrices read from the file with pread (the mapping
// does not fill), whatever the file system does with O_DIRECT.
TEST_F(MappedCheckpoint, ADirectSaveIsTheSameFile) {
  const int64_t resident_before = MappedResidentBytes(file);
  so.direct = true;
  ASSERT_TRUE(SaveCheckpoint(*loaded, dir.File("out"), so).ok());
  EXPECT_LT(MappedResidentBytes(file) - resident_before, loaded->embed_tokens.nbytes() / 8)
      << "whole tensors were copied out of the mapping";
  EXPECT_TRUE(*ReadFileToString(dir.File("out/model.safetensors")) == *ReadFileToString(file));
}

TEST(Checkpoint, OpenUsesTensorsOfTheComputeDtypeInPlace) {
  TempDir dir;
  ASSERT_TRUE(SaveTiny(dir.path(), 3, at::kBFloat16));
  const std::string file = fs::canonical(dir.File("model.safetensors")).string();

  auto opened = OpenCheckpoint(dir.path(), at::kBFloat16);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->compute_dtype, at::ScalarType::Undefined);
  for (auto& [name, t] : opened->NamedParameters()) {
    EXPECT_EQ(t->scalar_type(), at::kBFloat16) << name;
    EXPECT_EQ(MappedFileAt(t->data_ptr()), file) << name << " was copied, not used in place";
  }
  // A training load owns its memory.
  auto loaded = LoadCheckpoint(dir.path(), at::kBFloat16);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(MappedFileAt(loaded->layers[0].q_proj.data_ptr()), "");
  ExpectSameWeights(*opened, *loaded);
}

TEST(Checkpoint, OpenWidensOnUseOrAtLoad) {
  TempDir dir;
  ASSERT_TRUE(SaveTiny(dir.path(), 4, at::kBFloat16));
  const std::string file = fs::canonical(dir.File("model.safetensors")).string();
  auto on_use = OpenCheckpoint(dir.path(), at::kFloat);  // fp32 compute of a bf16 model
  auto at_load = OpenCheckpoint(dir.path(), at::kFloat, Widen::kAtLoad);
  auto copied = LoadCheckpoint(dir.path(), at::kFloat);
  ASSERT_TRUE(on_use.ok() && at_load.ok() && copied.ok());
  EXPECT_EQ(on_use->compute_dtype, at::kFloat);
  EXPECT_EQ(on_use->layers[1].down_proj.scalar_type(), at::kBFloat16);
  EXPECT_EQ(MappedFileAt(on_use->layers[1].down_proj.data_ptr()), file);
  EXPECT_EQ(at_load->dtype(), at::kFloat);
  EXPECT_EQ(at_load->ComputeDtype(), at::kFloat);

  torch::NoGradGuard no_grad;
  at::Tensor tokens = at::randint(0, TinyConfig().vocab_size, {2, 9}, at::kLong);
  at::Tensor want = Forward(*copied, tokens);
  at::Tensor got = Forward(*on_use, tokens);
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  EXPECT_TRUE(got.equal(want)) << "widening on use must compute what a widened copy computes";
  EXPECT_TRUE(Forward(*at_load, tokens).equal(want));
}

TEST(Checkpoint, OpenNarrowsWiderTensorsAtLoad) {
  TempDir dir;
  ASSERT_TRUE(SaveTiny(dir.path(), 5, at::kFloat));
  auto opened = OpenCheckpoint(dir.path(), at::kBFloat16);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(opened->dtype(), at::kBFloat16);
  EXPECT_EQ(opened->compute_dtype, at::ScalarType::Undefined);
  EXPECT_EQ(MappedFileAt(opened->layers[0].q_proj.data_ptr()), "");
}

TEST(Llama, WidenedLmHeadInSlicesMatchesAWidenedCopy) {
  model::ModelConfig c = TinyConfig();
  c.vocab_size = 70'000;  // three slices of rows
  c.hidden_size = 16, c.intermediate_size = 32, c.num_attention_heads = 2, c.num_key_value_heads = 1;
  c.num_hidden_layers = 1;
  LlamaModel narrow = InitModel(c, 6, at::kBFloat16);
  LlamaModel wide = InitModel(c, 6, at::kBFloat16);
  CastModel(wide, at::kFloat);
  narrow.compute_dtype = at::kFloat;
  torch::NoGradGuard no_grad;
  at::Tensor tokens = at::randint(0, c.vocab_size, {1, 5}, at::kLong);
  at::Tensor got = Forward(narrow, tokens), want = Forward(wide, tokens);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(got.allclose(want, 1e-5, 1e-6));
  EXPECT_EQ(got.argmax(-1).equal(want.argmax(-1)), true);
}

}  // namespace
}  // namespace topiary::model
