// The plain stderr sink of common/log.h, for compute-only builds.
#include <cstdio>
#include <ctime>
#include <mutex>

#include "common/log.h"

namespace topiary::log {

void Write(Level level, absl::string_view message) {
  if (static_cast<int>(level) < static_cast<int>(GetLevel())) return;
  static std::mutex mu;
  static const char kLetter[] = {'D', 'I', 'W', 'E'};
  std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", std::gmtime(&now));
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "%s %c %.*s\n", stamp, kLetter[static_cast<int>(level)], static_cast<int>(message.size()),
               message.data());
}

}  // namespace topiary::log
