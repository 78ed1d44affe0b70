// The subcommands of `topiary`. Each command group registers its CLI11
// subcommands and a runner; main parses and runs the one selected.
// Not thread-safe: used once from main.
#pragma once

#include <functional>
#include <utility>
#include <vector>

namespace CLI {
class App;
}

namespace topiary::cli {

inline constexpr const char* kVersion = "0.1.0";

class CommandRegistry {
 public:
  // Registers `run` for subcommand `app`; it returns the process exit code.
  void Add(CLI::App* app, std::function<int()> run) { commands_.emplace_back(app, std::move(run)); }
  // Runs the parsed subcommand; 2 if none was selected.
  int RunSelected() const;
  // Parses the command line and runs the selected subcommand: the exit code
  // (2 with one line on stderr for bad usage; --help and --version print and exit 0).
  int ParseAndRun(CLI::App& app, int argc, char** argv) const;

 private:
  std::vector<std::pair<CLI::App*, std::function<int()>>> commands_;
};

void RegisterAll(CLI::App& app, CommandRegistry& registry);

}  // namespace topiary::cli
