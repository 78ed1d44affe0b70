// `topiary run SPEC.yaml`: one machine, one command (docs/design.md, "One
// machine"). Starts a coordinator on a loopback port over a state directory
// (RocksDB, a fresh admin token) and N topiary-workers, submits the spec
// (relative paths resolved against the spec file's directory, the storage
// root the current directory unless --storage), shows the job live, and
// exits with its outcome (0 succeeded, 5 failed, 6 cancelled; 2 for a bad
// spec). Ctrl-C cancels the job (its ranks stop at a step boundary keeping
// their checkpoints) and stops everything it started; --resume continues
// the job of a run that was killed (or whose machine crashed); --dry-run
// prints the plan and starts nothing.
#pragma once

#include "client/commands.h"

namespace topiary::cli {

void RegisterRunCommand(CLI::App& app, CommandRegistry& registry);

}  // namespace topiary::cli
