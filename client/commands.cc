#include "client/commands.h"

#include <cstdio>

#include <CLI/CLI.hpp>

#include "client/api_commands.h"
#include "client/compress_commands.h"
#include "client/local_commands.h"
#include "client/run_command.h"
#include "client/train_commands.h"

namespace topiary::cli {

void RegisterAll(CLI::App& app, CommandRegistry& registry) {
  CLI::App* version = app.add_subcommand("version", "print the version");
  registry.Add(version, [] {
    std::printf("topiary %s\n", kVersion);
    return 0;
  });
  RegisterLocalCommands(app, registry);
  RegisterCompressCommands(app, registry);
  RegisterTrainCommands(app, registry);
  RegisterApiCommands(app, registry);
  RegisterRunCommand(app, registry);
}

}  // namespace topiary::cli
