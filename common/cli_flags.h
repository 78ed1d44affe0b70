// Flags of the long-running binaries (topiary-coordinator, topiary-worker)
// also read from environment variables, so a deployment can keep them in a
// Kubernetes ConfigMap (envFrom) instead of a command line: `--max-queued`
// of topiary-coordinator is TOPIARY_COORDINATOR_MAX_QUEUED. A flag on the
// command line wins over its variable. Header-only (CLI11 is header-only and
// only the mains link it).
#pragma once

#include <CLI/CLI.hpp>

#include <cctype>
#include <string>

namespace topiary {

// The variable that `--some-flag` is read from: PREFIX_SOME_FLAG.
inline std::string FlagEnvName(const std::string& prefix, const std::string& long_name) {
  std::string name = prefix + "_";
  for (char c : long_name) name += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

// Gives every long option of `app` (but --help and --check-flags) its variable.
inline void FlagsFromEnvironment(CLI::App& app, const std::string& prefix) {
  for (CLI::Option* opt : app.get_options()) {
    const std::vector<std::string>& names = opt->get_lnames();
    if (names.empty() || names[0] == "help" || names[0] == "check-flags") continue;
    opt->envname(FlagEnvName(prefix, names[0]));
  }
}

}  // namespace topiary
