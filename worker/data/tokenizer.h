// SentencePiece tokenization of text and JSONL corpora into token files.
// Text: documents are separated by blank lines (lines inside a document are
// joined with a space). JSONL: one {"text": "..."} object per line. Each
// document is encoded and followed by the end-of-sequence id.
// Thread-compatible.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/data/spm_processor.h"

namespace topiary::data {

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_path);
  ~Tokenizer();
  std::vector<int64_t> Encode(absl::string_view text) const;
  std::string Decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const;
  int64_t bos_id() const;
  int64_t eos_id() const;

 private:
  Tokenizer() = default;
  std::unique_ptr<SpmProcessor> sp_;
};

enum class TextFormat { kText, kJsonl };
absl::StatusOr<TextFormat> ParseTextFormat(absl::string_view text);

// Splits a corpus into documents as described above. JSONL lines that are
// not objects with a string "text" are errors naming the line number.
absl::StatusOr<std::vector<std::string>> SplitDocuments(absl::string_view corpus, TextFormat format);

// Tokenizes every document, appending eos after each.
std::vector<int64_t> TokenizeDocuments(const Tokenizer& tok, const std::vector<std::string>& docs);

}  // namespace topiary::data
