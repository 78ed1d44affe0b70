#include "worker/model/errors.h"

#include <c10/util/Exception.h>

#include <new>
#include <string>

#include "absl/strings/str_cat.h"

namespace topiary {
namespace {
// The first line of a libtorch message (the rest is a C++ backtrace).
std::string FirstLine(const char* text) {
  std::string s(text);
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}
}  // namespace

absl::Status CatchTorch(absl::string_view what, const std::function<absl::Status()>& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  } catch (const c10::IndexError& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::ValueError& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::TypeError& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::Error& e) {
    std::string msg = FirstLine(e.what_without_backtrace());
    if (msg.find("out of memory") != std::string::npos || msg.find("DefaultCPUAllocator") != std::string::npos) {
      return absl::ResourceExhaustedError(absl::StrCat(what, ": ", msg));
    }
    return absl::InternalError(absl::StrCat(what, ": ", msg));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

}  // namespace topiary
