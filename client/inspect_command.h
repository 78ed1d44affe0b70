// `topiary inspect`: a checkpoint's config, parameter counts, dtype and size
// on disk, from config.json and the file sizes alone (no weights read, no
// libtorch), so the front binary answers it at once.
#pragma once

#include "client/commands.h"

namespace CLI {
class App;
}

namespace topiary::cli {

void RegisterInspectCommand(CLI::App& app, CommandRegistry& registry);

}  // namespace topiary::cli
