// Requests whose bytes do not parse as the method's message: gRPC answers
// them INTERNAL with an empty message; this server interceptor turns that
// answer into INVALID_ARGUMENT "could not parse request" (what the health
// service says), so a client learns that its input, not the server, is at
// fault. Handlers never answer INTERNAL without a message, which is how the
// two are told apart. Thread-safe.
#pragma once

#include <memory>
#include <vector>

#include <grpcpp/support/server_interceptor.h>

namespace topiary::server {

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> ParseErrorInterceptors();

}  // namespace topiary::server
