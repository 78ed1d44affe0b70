// What every stage opens: token data (tokenizing text or JSONL on the fly),
// the communicator of its ranks, and the compute dtype. Moved here from the
// CLI so that the CLI and the worker's rank process share them. Blocking;
// thread-compatible.
#pragma once

#include <ATen/core/ScalarType.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/data/token_file.h"
#include "worker/dist/communicator.h"
#include "worker/dist/rendezvous.h"

namespace topiary::stages {

struct DataOptions {
  std::string path;
  std::string format = "auto";  // u16 | u32 | auto | text | jsonl
  std::string tokenizer;        // for text/jsonl; default <model>/tokenizer.model
};

// Opens a token file, tokenizing a text or JSONL corpus first (into a
// temporary token file) when the format asks for it.
absl::StatusOr<std::unique_ptr<data::TokenFile>> OpenData(const DataOptions& data, const std::string& model_dir,
                                                          int64_t vocab_size);

// The ranks of a run: with world_size > 1 they meet through `rendezvous`
// (owned by the caller) or, when it is null, through `rendezvous_spec`
// ("file:DIR", a fresh directory every rank sees).
struct DistOptions {
  int rank = 0;
  int world_size = 1;
  std::string rendezvous_spec;
  dist::Rendezvous* rendezvous = nullptr;
  std::string hostname = "127.0.0.1";  // the address this rank listens on
  double timeout_s = 300;
};

// The communicator of a run (owning its file rendezvous); Local for one rank.
struct DistSession {
  std::unique_ptr<dist::Rendezvous> rendezvous;
  std::unique_ptr<dist::Communicator> comm;
};
absl::StatusOr<DistSession> OpenDist(const DistOptions& options);

// "fp32" | "bf16" | "fp16" (and their long names).
absl::StatusOr<at::ScalarType> ParseDtype(const std::string& s, absl::string_view field);

// Sets libtorch's intra-op threads (0: every hardware thread).
void SetThreads(int threads);

}  // namespace topiary::stages
