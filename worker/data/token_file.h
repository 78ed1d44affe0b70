// Token files: flat little-endian uint16 or uint32 token ids (".bin"), read
// through a read-only mmap. Untrusted input: the size must be a whole number
// of tokens, and every id read is checked against the vocabulary size.
// Thread-safe for concurrent reads once opened.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace topiary::data {

enum class TokenFormat { kAuto, kU16, kU32 };

// "u16", "u32" or "auto".
absl::StatusOr<TokenFormat> ParseTokenFormat(absl::string_view text);
// kU16 when every id of a vocabulary of this size fits 16 bits, else kU32.
TokenFormat FormatForVocab(int64_t vocab_size);

class TokenFile {
 public:
  // kAuto infers the width from vocab_size (FormatForVocab).
  static absl::StatusOr<std::unique_ptr<TokenFile>> Open(const std::string& path, TokenFormat format,
                                                         int64_t vocab_size);
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  int64_t size() const { return num_tokens_; }
  const std::string& path() const { return path_; }
  // Copies tokens [begin, begin + n) into out. Fails on a range outside the
  // file or an id >= vocab_size, naming the position.
  absl::Status Read(int64_t begin, int64_t n, int64_t* out) const;

 private:
  TokenFile() = default;
  std::string path_;
  void* map_ = nullptr;
  uint64_t bytes_ = 0;
  int width_ = 2;
  int64_t num_tokens_ = 0;
  int64_t vocab_size_ = 0;
};

// Writes ids as a token file of the given width (kU16 or kU32), atomically.
absl::Status WriteTokenFile(const std::string& path, const std::vector<int64_t>& ids, TokenFormat format);

}  // namespace topiary::data
