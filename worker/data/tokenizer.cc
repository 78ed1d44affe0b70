#include "worker/data/tokenizer.h"

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace topiary::data {

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  std::unique_ptr<Tokenizer> t(new Tokenizer);
  t->sp_ = std::make_unique<SpmProcessor>();
  std::string err = t->sp_->Load(path);
  if (!err.empty()) return absl::InvalidArgumentError(absl::StrCat("tokenizer ", path, ": ", err));
  return t;
}

Tokenizer::~Tokenizer() = default;

std::vector<int64_t> Tokenizer::Encode(absl::string_view text) const { return sp_->Encode(std::string(text)); }

std::string Tokenizer::Decode(const std::vector<int64_t>& ids) const {
  std::vector<int> v;
  for (int64_t id : ids) {
    if (id >= 0 && id < vocab_size()) v.push_back(static_cast<int>(id));
  }
  return sp_->Decode(v);
}

int64_t Tokenizer::vocab_size() const { return sp_->vocab_size(); }
int64_t Tokenizer::bos_id() const { return sp_->bos_id(); }
int64_t Tokenizer::eos_id() const { return sp_->eos_id(); }

absl::StatusOr<TextFormat> ParseTextFormat(absl::string_view text) {
  if (text == "text") return TextFormat::kText;
  if (text == "jsonl") return TextFormat::kJsonl;
  return absl::InvalidArgumentError(absl::StrCat("data format '", text, "': expected text or jsonl"));
}

absl::StatusOr<std::vector<std::string>> SplitDocuments(absl::string_view corpus, TextFormat format) {
  std::vector<std::string> docs;
  int64_t line_no = 0;
  std::string current;
  for (absl::string_view line : absl::StrSplit(corpus, '\n')) {
    ++line_no;
    absl::string_view stripped = absl::StripAsciiWhitespace(line);
    if (format == TextFormat::kText) {
      if (stripped.empty()) {
        if (!current.empty()) docs.push_back(std::move(current));
        current.clear();
      } else {
        if (!current.empty()) current.push_back(' ');
        current.append(stripped.data(), stripped.size());
      }
      continue;
    }
    if (stripped.empty()) continue;
    auto j = nlohmann::json::parse(stripped.begin(), stripped.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("text") || !j["text"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_no, ": expected a JSON object with a string \"text\""));
    }
    docs.push_back(j["text"].get<std::string>());
  }
  if (!current.empty()) docs.push_back(std::move(current));
  return docs;
}

std::vector<int64_t> TokenizeDocuments(const Tokenizer& tok, const std::vector<std::string>& docs) {
  std::vector<int64_t> out;
  for (const std::string& d : docs) {
    std::vector<int64_t> ids = tok.Encode(d);
    out.insert(out.end(), ids.begin(), ids.end());
    out.push_back(tok.eos_id());
  }
  return out;
}

}  // namespace topiary::data
