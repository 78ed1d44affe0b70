// Maps libtorch exceptions to absl::Status at the boundary of each public
// worker operation (docs/design.md, "Stages"): out of memory -> RESOURCE_EXHAUSTED,
// bad shapes/values/indices -> INVALID_ARGUMENT, anything else -> INTERNAL
// with the original text. No exception escapes a function wrapped this way.
#pragma once

#include <functional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace topiary {

// Runs `fn`, converting any exception into a Status prefixed with `what`.
absl::Status CatchTorch(absl::string_view what, const std::function<absl::Status()>& fn);

}  // namespace topiary
