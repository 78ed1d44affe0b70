// topiary-compute: every command of `topiary`, compute in this process (the
// `topiary` front execs it for the commands in client/compute_commands.h;
// it also answers the API commands, which talk to a coordinator over gRPC). Exit codes: 0 success,
// 1 the operation failed, 2 bad usage or input; API commands also 3 (the
// coordinator unreachable), 4 (authentication or permission refused), 5 (the
// watched job failed), 6 (the watched job was cancelled).
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "common/process.h"

#include "client/commands.h"
#include "worker/model/caching_allocator.h"

int main(int argc, char** argv) {
  topiary::TuneMalloc();
  topiary::model::InstallCachingCpuAllocator();  // tensor buffers stay mapped between steps
  CLI::App app{"topiary: structured pruning and distillation of Llama-family models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("topiary ") + topiary::cli::kVersion);
  topiary::cli::CommandRegistry registry;
  topiary::cli::RegisterAll(app, registry);
  return registry.ParseAndRun(app, argc, argv);
}
