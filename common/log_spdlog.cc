// The spdlog sink of common/log.h.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "common/log.h"

namespace topiary::log {
namespace {
spdlog::logger& Logger() {
  static auto* logger = [] {
    auto l = spdlog::stderr_color_mt("topiary");
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ %v");
    l->set_level(spdlog::level::debug);
    return l.get();
  }();
  return *logger;
}
}  // namespace

void Write(Level level, absl::string_view message) {
  if (static_cast<int>(level) < static_cast<int>(GetLevel())) return;
  static const spdlog::level::level_enum kMap[] = {spdlog::level::debug, spdlog::level::info, spdlog::level::warn,
                                                   spdlog::level::err};
  Logger().log(kMap[static_cast<int>(level)], "{}", fmt::string_view(message.data(), message.size()));
}

}  // namespace topiary::log
