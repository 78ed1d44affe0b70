// Compression commands of `topiary` (run locally): importance, prune.
#pragma once

#include "client/commands.h"

namespace topiary::cli {

void RegisterCompressCommands(CLI::App& app, CommandRegistry& registry);

}  // namespace topiary::cli
