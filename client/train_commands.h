// `topiary train` (cross-entropy; also teacher correction) and `topiary
// distill` (knowledge distillation from a teacher): one training loop, data
// parallel over --rank/--world-size/--rendezvous, checkpoints and --resume.
#pragma once

#include "client/commands.h"

namespace CLI {
class App;
}

namespace topiary::cli {

void RegisterTrainCommands(CLI::App& app, CommandRegistry& registry);

}  // namespace topiary::cli
