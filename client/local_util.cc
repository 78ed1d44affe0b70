#include "client/local_util.h"

#include <torch/torch.h>

#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "worker/data/tokenizer.h"
#include "worker/dist/gloo_communicator.h"

namespace topiary::cli {

// The flag vocabulary shared by local commands.
void AddDistFlags(CLI::App* cmd, DistFlags* f) {
  cmd->add_option("--rank", f->rank, "this process's rank")->capture_default_str();
  cmd->add_option("--world-size", f->world_size, "number of ranks")->capture_default_str();
  cmd->add_option("--rendezvous", f->rendezvous, "file:DIR, a fresh directory every rank sees");
  cmd->add_option("--hostname", f->hostname, "address this rank listens on")->capture_default_str();
  cmd->add_option("--dist-timeout", f->timeout_s, "seconds before a silent peer fails the run")->capture_default_str();
}

absl::StatusOr<DistSession> OpenDist(const DistFlags& f) {
  DistSession s;
  if (f.world_size < 1) return absl::InvalidArgumentError("--world-size: must be at least 1");
  if (f.rank < 0 || f.rank >= f.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("--rank: ", f.rank, " is outside [0, ", f.world_size, ")"));
  }
  if (f.world_size == 1) {
    s.comm = dist::MakeLocalCommunicator();
    return s;
  }
  if (f.rendezvous.empty()) return absl::InvalidArgumentError("--rendezvous: required when --world-size > 1");
  if (!(f.timeout_s > 0)) return absl::InvalidArgumentError("--dist-timeout: must be positive");
  ASSIGN_OR_RETURN(s.rendezvous, dist::OpenRendezvous(f.rendezvous));
  dist::GlooOptions o;
  o.rank = f.rank;
  o.world_size = f.world_size;
  o.hostname = f.hostname;
  o.timeout = absl::Seconds(f.timeout_s);
  ASSIGN_OR_RETURN(s.comm, dist::CreateGlooCommunicator(s.rendezvous.get(), o));
  return s;
}

void AddDataFlags(CLI::App* cmd, DataFlags* f, const char* flag, bool required) {
  auto* opt = cmd->add_option(flag, f->path, "token file (.bin), text or JSONL corpus");
  if (required) opt->required();
  cmd->add_option(absl::StrCat(flag, "-format"), f->format, "u16|u32|auto|text|jsonl")->capture_default_str();
  cmd->add_option("--tokenizer", f->tokenizer, "SentencePiece model for text/jsonl (default: the model's)");
}

absl::StatusOr<at::ScalarType> ParseDtype(const std::string& s, absl::string_view field) {
  if (s == "fp32" || s == "float32") return at::kFloat;
  if (s == "bf16" || s == "bfloat16") return at::kBFloat16;
  if (s == "fp16" || s == "float16") return at::kHalf;
  return absl::InvalidArgumentError(absl::StrCat(field, ": unknown dtype '", s, "' (fp32, bf16, fp16)"));
}

void SetThreads(int threads) {
  at::set_num_threads(threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

absl::StatusOr<std::unique_ptr<data::TokenFile>> OpenData(const DataFlags& f, const std::string& model_dir,
                                                          int64_t vocab_size) {
  if (f.format == "text" || f.format == "jsonl") {
    std::string tok_path = f.tokenizer.empty() ? model_dir + "/tokenizer.model" : f.tokenizer;
    ASSIGN_OR_RETURN(auto tok, data::Tokenizer::Load(tok_path));
    ASSIGN_OR_RETURN(data::TextFormat tf, data::ParseTextFormat(f.format));
    ASSIGN_OR_RETURN(std::string corpus, ReadFileToString(f.path, size_t{8} << 30));
    ASSIGN_OR_RETURN(auto docs, data::SplitDocuments(corpus, tf));
    ASSIGN_OR_RETURN(std::string dir, MakeTempDir("topiary-tokens"));
    std::string bin = dir + "/data.bin";
    RETURN_IF_ERROR(data::WriteTokenFile(bin, data::TokenizeDocuments(*tok, docs), data::FormatForVocab(vocab_size)));
    auto file = data::TokenFile::Open(bin, data::FormatForVocab(vocab_size), vocab_size);
    RemoveAll(dir).IgnoreError();  // the mapping stays valid after unlink
    return file;
  }
  ASSIGN_OR_RETURN(data::TokenFormat format, data::ParseTokenFormat(f.format));
  return data::TokenFile::Open(f.path, format, vocab_size);
}

}  // namespace topiary::cli
