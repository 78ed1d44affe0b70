// Client channels to the coordinator, shared by the CLI, the worker agent and
// its rank processes: plaintext, TLS (a CA to trust) or mutual TLS (a client
// certificate and key), with a bearer token on every call. Thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace topiary::rpc {

struct ChannelOptions {
  std::string address;            // HOST:PORT
  std::string token;              // bearer token ("" for none)
  std::string tls_ca;             // PEM file of the CA that signed the server (TLS when set)
  std::string tls_cert, tls_key;  // PEM files of a client certificate (mutual TLS)
  bool fast_reconnect = false;    // retry a lost connection every 100-500 ms (daemons)
};

// Reads the PEM files now (NOT_FOUND / INVALID_ARGUMENT naming the flag).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const ChannelOptions& options);

// A context carrying the token, with a deadline `timeout` from now (none when zero).
std::unique_ptr<grpc::ClientContext> MakeContext(const std::string& token,
                                                 std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

absl::Status FromGrpc(const grpc::Status& status);

// The first line of a token file, trimmed (tokens are never on the command line).
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace topiary::rpc
