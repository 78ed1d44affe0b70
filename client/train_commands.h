// `topiary train` (cross-entropy; also teacher correction), `topiary distill`
// (knowledge distillation from a teacher, optional hidden-state loss) and
// `topiary streamline` (a replacement block for removed ones): one training
// loop, LoRA or partial-layer tuning on request, data parallel over
// --rank/--world-size/--rendezvous, checkpoints and --resume, MFU against the
// GEMM peak measured at start.
#pragma once

#include "client/commands.h"

namespace CLI {
class App;
}

namespace topiary::cli {

void RegisterTrainCommands(CLI::App& app, CommandRegistry& registry);

}  // namespace topiary::cli
