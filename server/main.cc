// topiary-coordinator: serves the Topiary API until SIGTERM, then drains.
//
// This first version serves gRPC health checking and server reflection; the
// job service, store, scheduler and metrics arrive with the coordinator issue.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "common/process.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/signals.h"
#include "topiary/v1/job_service.grpc.pb.h"

namespace {

struct CoordinatorConfig {
  std::string listen = "127.0.0.1:7070";
  std::string log_level = "info";
  int drain_seconds = 10;
};

int Run(const CoordinatorConfig& config) {
  using namespace topiary;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Until the job service is implemented, its generated base answers
  // UNIMPLEMENTED; it also lets gRPC serve the health service.
  topiary::v1::JobService::Service job_service;
  builder.RegisterService(&job_service);
  int port = 0;
  builder.AddListeningPort(config.listen, grpc::InsecureServerCredentials(), &port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    log::Error(absl::StrCat("cannot listen on ", config.listen));
    return 1;
  }
  log::Info(absl::StrCat("topiary-coordinator listening on port ", port,
                         " (listen=", config.listen, ", drain_seconds=", config.drain_seconds, ")"));
  int sig = WaitForTerminationSignal();
  log::Info(absl::StrCat("signal ", sig, ": draining for up to ", config.drain_seconds, "s"));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(config.drain_seconds));
  log::Info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  topiary::TuneMalloc();
  topiary::BlockTerminationSignals();
  CoordinatorConfig config;
  CLI::App app{"topiary-coordinator: the Topiary job coordinator"};
  app.add_option("--listen", config.listen, "gRPC address HOST:PORT (port 0 picks a free one)")
      ->capture_default_str();
  app.add_option("--log-level", config.log_level, "debug|info|warn|error")->capture_default_str();
  app.add_option("--drain-seconds", config.drain_seconds, "grace period on SIGTERM")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  topiary::log::Level level;
  if (!topiary::log::ParseLevel(config.log_level, &level)) {
    std::fprintf(stderr, "topiary-coordinator: --log-level: unknown level '%s'\n", config.log_level.c_str());
    return 2;
  }
  topiary::log::SetLevel(level);
  return Run(config);
}
