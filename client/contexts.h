// Named connections of the `topiary` API commands, like kubectl's contexts:
// a config file (TOPIARY_CONFIG, else $XDG_CONFIG_HOME/topiary/config.yaml,
// else ~/.config/topiary/config.yaml) holds
//
//   current-context: prod
//   contexts:
//     - name: prod
//       server: topiary.example.com:7070
//       token-file: ~/.config/topiary/prod.token
//       tls-ca: ~/.config/topiary/prod-ca.pem      # optional: tls-cert, tls-key
//
// and `--context NAME` (or TOPIARY_CONTEXT) picks one, else current-context.
// What a command connects with, field by field: its flag, else the
// environment (TOPIARY_SERVER, TOPIARY_TOKEN), else the context, else
// 127.0.0.1:7070 without a token. The file is bounded (1 MiB, 1,000
// contexts); `~/` is the home directory. Thread-compatible.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace topiary::cli {

struct Context {
  std::string name, server, token_file, tls_ca, tls_cert, tls_key;
};

struct ClientConfig {
  std::string path;  // where it was read from (and is written to)
  std::string current_context;
  std::vector<Context> contexts;
  const Context* Find(const std::string& name) const;
};

// TOPIARY_CONFIG, else $XDG_CONFIG_HOME/topiary/config.yaml, else $HOME/.config/topiary/config.yaml.
std::string DefaultClientConfigPath();

// The config at `path`; an empty one (with that path) when the file does not exist.
absl::StatusOr<ClientConfig> LoadClientConfig(const std::string& path);

// Writes `config` to config.path atomically, creating its directory (mode 0700).
absl::Status SaveClientConfig(const ClientConfig& config);

// A command's connection: set fields are its flags; `context` is --context.
struct Connection {
  std::string server, token, token_file, tls_ca, tls_cert, tls_key, context;
};

// Fills what the flags left empty from the environment, then the context,
// then the defaults; reads the token file. Errors name the flag or the file.
absl::Status ResolveConnection(Connection* c);

}  // namespace topiary::cli
