// topiary-worker: the worker daemon. It will register with the coordinator,
// take task assignments and run stages; that agent arrives with the
// coordinator issue. Until then this binary only parses its flags.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "common/process.h"

int main(int argc, char** argv) {
  topiary::TuneMalloc();
  std::string coordinator = "127.0.0.1:7070";
  int slots = 1;
  CLI::App app{"topiary-worker: runs Topiary tasks for a coordinator"};
  app.add_option("--coordinator", coordinator, "coordinator address HOST:PORT")->capture_default_str();
  app.add_option("--slots", slots, "slots this worker offers (GPUs, or CPU ranks)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  std::fprintf(stderr, "topiary-worker: the worker agent is not built yet; use `topiary run` locally\n");
  return 1;
}
