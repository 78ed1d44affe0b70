// A thin wrapper around sentencepiece::SentencePieceProcessor, reached through
// libtopiary_spm_shim.so, loaded on first use (see spm_shim.cc for why: its
// bundled protobuf must not meet libtorch's). The Debian sentencepiece header
// also declares its own `absl::string_view`, so only spm_shim.cc includes it.
// Thread-compatible.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace topiary::data {

class SpmProcessor {
 public:
  SpmProcessor();
  ~SpmProcessor();
  // Returns an empty string on success, else the error.
  std::string Load(const std::string& path);
  std::vector<int64_t> Encode(const std::string& text) const;
  std::string Decode(const std::vector<int>& ids) const;
  int64_t vocab_size() const;
  int64_t bos_id() const;
  int64_t eos_id() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace topiary::data
