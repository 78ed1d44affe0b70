// Helpers shared by the local (compute) commands of `topiary`.
#pragma once

#include <ATen/core/ScalarType.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/cli_util.h"
#include "client/commands.h"
#include "worker/data/token_file.h"
#include "worker/dist/communicator.h"
#include "worker/dist/rendezvous.h"
#include "worker/model/errors.h"

namespace CLI {
class App;
}

namespace topiary::cli {

// The flag vocabulary shared by local commands.
struct DataFlags {
  std::string path;
  std::string format = "auto";  // u16 | u32 | auto | text | jsonl
  std::string tokenizer;        // for text/jsonl; default <model>/tokenizer.model
};

void AddDataFlags(CLI::App* cmd, DataFlags* f, const char* flag = "--data", bool required = true);

// Ranks of a local multi-process run: each process passes its --rank, the
// same --world-size and the same --rendezvous file:DIR (a fresh directory).
struct DistFlags {
  int rank = 0;
  int world_size = 1;
  std::string rendezvous;           // file:DIR; required when world_size > 1
  std::string hostname = "127.0.0.1";
  double timeout_s = 300;
};

void AddDistFlags(CLI::App* cmd, DistFlags* f);

// The communicator of a run (owning its rendezvous); Local for one rank.
struct DistSession {
  std::unique_ptr<dist::Rendezvous> rendezvous;
  std::unique_ptr<dist::Communicator> comm;
};
absl::StatusOr<DistSession> OpenDist(const DistFlags& f);

// "fp32" | "bf16" | "fp16" (and their long names).
absl::StatusOr<at::ScalarType> ParseDtype(const std::string& s, absl::string_view field);

// Sets libtorch's intra-op threads (0: every hardware thread).
void SetThreads(int threads);

// Opens a token file, tokenizing a text or JSONL corpus first (into a
// temporary token file) when the format asks for it.
absl::StatusOr<std::unique_ptr<data::TokenFile>> OpenData(const DataFlags& f, const std::string& model_dir,
                                                          int64_t vocab_size);

// Registers a local command: `fn(flags)` returns a Status; exceptions from
// libtorch become a Status, and the Status one line and an exit code.
template <typename Flags, typename Fn>
void AddRunner(CommandRegistry& registry, CLI::App* cmd, std::shared_ptr<Flags> flags, const char* name, Fn fn) {
  registry.Add(cmd, [flags, name, fn] { return ReportStatus(name, CatchTorch(name, [&] { return fn(*flags); })); });
}

}  // namespace topiary::cli
