#include <cstdio>

#include <CLI/CLI.hpp>

#include "client/commands.h"

namespace topiary::cli {

int CommandRegistry::RunSelected() const {
  for (const auto& [app, run] : commands_) {
    if (app->parsed()) return run();
  }
  std::fprintf(stderr, "topiary: no command given (see topiary --help)\n");
  return 2;
}

}  // namespace topiary::cli
