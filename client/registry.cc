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

int CommandRegistry::ParseAndRun(CLI::App& app, int argc, char** argv) const {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "topiary: %s (see topiary --help)\n", e.what());
    return 2;
  }
  return RunSelected();
}

}  // namespace topiary::cli
