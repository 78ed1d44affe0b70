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
