// topiary: the command line. This front binary never loads libtorch, so the
// API commands (submit, get, list, watch, cancel, delete, report), inspect
// and version/--help start at once; every command that computes (client/
// compute_commands.h) is handed to topiary-compute, installed next to it,
// with the same arguments (exec: same process, same exit code). Exit codes:
// 0 success, 1 the operation failed, 2 bad usage or input; API commands also
// 3 (the coordinator unreachable), 4 (authentication or permission refused),
// 5 (the watched job failed), 6 (the watched job was cancelled).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "client/api_commands.h"
#include "client/commands.h"
#include "client/compute_commands.h"
#include "client/inspect_command.h"

namespace {

// topiary-compute beside this executable (or $TOPIARY_COMPUTE).
std::string ComputeBinary() {
  if (const char* env = std::getenv("TOPIARY_COMPUTE"); env != nullptr && *env != '\0') return env;
  std::vector<char> self(4096);
  const ssize_t n = readlink("/proc/self/exe", self.data(), self.size() - 1);
  if (n <= 0) return "topiary-compute";
  std::string path(self.data(), static_cast<size_t>(n));
  return path.substr(0, path.rfind('/') + 1) + "topiary-compute";
}

[[noreturn]] void Delegate(int argc, char** argv) {
  const std::string binary = ComputeBinary();
  std::vector<char*> args(argv, argv + argc);
  args.push_back(nullptr);
  execv(binary.c_str(), args.data());
  std::fprintf(stderr, "topiary: this command runs in topiary-compute, which could not be started (%s: %s)\n",
               binary.c_str(), std::strerror(errno));
  std::exit(2);
}

// A subcommand that takes every argument as it is and hands the whole
// command line over (its own --help included).
void AddDelegated(CLI::App& app, topiary::cli::CommandRegistry& registry, const topiary::cli::ComputeCommand& c,
                  int argc, char** argv) {
  CLI::App* cmd = app.add_subcommand(c.name, c.help);
  cmd->set_help_flag();
  cmd->prefix_command();
  cmd->allow_extras();
  registry.Add(cmd, [argc, argv] {
    Delegate(argc, argv);
    return 2;
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"topiary: structured pruning and distillation of Llama-family models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("topiary ") + topiary::cli::kVersion);
  topiary::cli::CommandRegistry registry;
  CLI::App* version = app.add_subcommand("version", "print the version");
  registry.Add(version, [] {
    std::printf("topiary %s\n", topiary::cli::kVersion);
    return 0;
  });
  for (const auto& c : topiary::cli::kLocalComputeCommands) {
    if (std::string(c.name) == "inspect") {
      topiary::cli::RegisterInspectCommand(app, registry);  // reads config.json only: runs here
    } else {
      AddDelegated(app, registry, c, argc, argv);
    }
  }
  topiary::cli::RegisterApiCommands(app, registry);
  AddDelegated(app, registry, topiary::cli::kRunCommand, argc, argv);
  return registry.ParseAndRun(app, argc, argv);
}
