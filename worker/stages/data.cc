#include "worker/stages/data.h"

#include <torch/torch.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "worker/data/tokenizer.h"
#include "worker/dist/gloo_communicator.h"

namespace topiary::stages {

absl::StatusOr<DistSession> OpenDist(const DistOptions& f) {
  DistSession s;
  if (f.world_size < 1) return absl::InvalidArgumentError("--world-size: must be at least 1");
  if (f.rank < 0 || f.rank >= f.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("--rank: ", f.rank, " is outside [0, ", f.world_size, ")"));
  }
  if (f.world_size == 1) {
    s.comm = dist::MakeLocalCommunicator();
    return s;
  }
  if (f.rendezvous == nullptr && f.rendezvous_spec.empty()) {
    return absl::InvalidArgumentError("--rendezvous: required when --world-size > 1");
  }
  if (!(f.timeout_s > 0)) return absl::InvalidArgumentError("--dist-timeout: must be positive");
  dist::Rendezvous* rendezvous = f.rendezvous;
  if (rendezvous == nullptr) {
    ASSIGN_OR_RETURN(s.rendezvous, dist::OpenRendezvous(f.rendezvous_spec));
    rendezvous = s.rendezvous.get();
  }
  dist::GlooOptions o;
  o.rank = f.rank;
  o.world_size = f.world_size;
  o.hostname = f.hostname;
  o.timeout = absl::Seconds(f.timeout_s);
  ASSIGN_OR_RETURN(s.comm, dist::CreateGlooCommunicator(rendezvous, o));
  return s;
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

absl::StatusOr<std::unique_ptr<data::TokenFile>> OpenData(const DataOptions& f, const std::string& model_dir,
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

}  // namespace topiary::stages
