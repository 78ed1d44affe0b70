// Local commands of `topiary`: they run compute in this process on files
// (init, tokenize, train, eval, inspect, generate).
#pragma once

#include "client/commands.h"

namespace topiary::cli {

void RegisterLocalCommands(CLI::App& app, CommandRegistry& registry);

}  // namespace topiary::cli
