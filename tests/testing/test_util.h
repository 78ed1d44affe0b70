// Helpers shared by tests: temporary directories and small model configs.
#pragma once

#include <cstdlib>
#include <string>

#include "common/file_util.h"
#include "worker/model/config.h"

namespace topiary::testing {

// A temporary directory removed when the object dies.
class TempDir {
 public:
  TempDir() : path_(*MakeTempDir("topiary-test")) {}
  ~TempDir() { RemoveAll(path_).IgnoreError(); }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The repository root (tests run with TOPIARY_SOURCE_DIR set by CTest).
inline std::string SourceDir() {
  const char* d = std::getenv("TOPIARY_SOURCE_DIR");
  return d ? d : ".";
}

// For the memory tests: writes DIR/config.json of a 107M-parameter bf16
// Llama (214 MB; embed and lm_head 8000x1024, 6 blocks of 15.2M, made by
// `topiary init`) and DIR/tokens.bin, 4096 u16 tokens below 4096 (valid for
// it and for the bundled model). False if a write failed.
inline bool WriteMemoryTestInputs(const std::string& dir) {
  const bool config = WriteFileAtomically(dir + "/config.json", R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1024,
    "intermediate_size": 4096, "num_attention_heads": 16, "num_key_value_heads": 4, "num_hidden_layers": 6,
    "vocab_size": 8000, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16"})")
                          .ok();
  std::string tokens;
  for (int i = 0; i < 4096; ++i) tokens += std::string{static_cast<char>(i % 251), static_cast<char>(i % 16)};
  return config && WriteFileAtomically(dir + "/tokens.bin", tokens).ok();
}

// A small Llama config with GQA (NH=4, G=2) for fast tests.
inline model::ModelConfig TinyConfig() {
  model::ModelConfig c;
  c.family = model::Family::kLlama;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.num_hidden_layers = 3;
  c.vocab_size = 97;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000;
  c.max_position_embeddings = 128;
  c.torch_dtype = "float32";
  return c;
}

}  // namespace topiary::testing
