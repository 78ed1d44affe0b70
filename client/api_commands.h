// The API half of `topiary`: submit, get, list, watch, cancel, delete and
// report jobs on a coordinator over gRPC (docs/design.md, "The coordinator").
//
// Flags common to all: --server HOST:PORT (env TOPIARY_SERVER, default
// 127.0.0.1:7070), --token (env TOPIARY_TOKEN), --tls-ca / --tls-cert /
// --tls-key, --output table|json|yaml, --timeout SECONDS.
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

}  // namespace topiary::cli
