// Helpers shared by the local (compute) commands of `topiary`: the flag
// vocabulary they share, filled into the stages' option structs
// (worker/stages), and the runner that turns a stage's Status into one line
// and an exit code.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/cli_util.h"
#include "client/commands.h"
#include "worker/model/errors.h"
#include "worker/stages/context.h"
#include "worker/stages/data.h"

namespace CLI {
class App;
}

namespace topiary::cli {

// --data FILE, --data-format, --tokenizer (the flag name may differ).
void AddDataFlags(CLI::App* cmd, stages::DataOptions* f, const char* flag = "--data", bool required = true);

// Ranks of a local multi-process run: each process passes its --rank, the
// same --world-size and the same --rendezvous file:DIR (a fresh directory).
void AddDistFlags(CLI::App* cmd, stages::DistOptions* f);

// The context of a local command: one thread per core, notes on stdout.
stages::StageContext LocalContext(int threads, const stages::DistSession* dist = nullptr);

// Registers a local command: `fn(flags)` returns a Status; exceptions from
// libtorch become a Status, and the Status one line and an exit code.
template <typename Flags, typename Fn>
void AddRunner(CommandRegistry& registry, CLI::App* cmd, std::shared_ptr<Flags> flags, const char* name, Fn fn) {
  registry.Add(cmd, [flags, name, fn] { return ReportStatus(name, CatchTorch(name, [&] { return fn(*flags); })); });
}

}  // namespace topiary::cli
