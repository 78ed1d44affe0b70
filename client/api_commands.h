// The API half of `topiary`: submit, get, list, watch, cancel, delete and
// report jobs on a coordinator over gRPC (docs/design.md, "The coordinator").
//
// Flags common to all: --server HOST:PORT, --token or --token-file,
// --context (each filled from the environment, then the config file's
// context: client/contexts.h), --tls-ca / --tls-cert / --tls-key,
// --output table|json|yaml, --timeout SECONDS.
// Exit codes beyond 0/1/2: 3 the coordinator could not be reached,
// 4 authentication or permission refused, 5 the watched job FAILED,
// 6 the watched job was CANCELLED.
#pragma once

#include "client/commands.h"

namespace CLI {
class App;
}

namespace topiary::cli {

void RegisterApiCommands(CLI::App& app, CommandRegistry& registry);
// `topiary config ...` (client/config_commands.cc); registered by RegisterApiCommands.
void RegisterConfigCommands(CLI::App& app, CommandRegistry& registry);

}  // namespace topiary::cli
