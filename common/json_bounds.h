// Bounds for JSON text received from outside (a worker's result, a file):
// callers check size and nesting depth here before handing the text to a
// recursive parser, so that deeply nested input cannot overflow the stack.
// Pure function; thread-safe.
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace topiary {

// INVALID_ARGUMENT "<field>: ..." when `text` is longer than max_bytes or
// nests arrays and objects deeper than max_depth. Does not check syntax.
absl::Status CheckJsonBounds(absl::string_view text, size_t max_bytes, int max_depth, absl::string_view field);

// INVALID_ARGUMENT "<field>: not valid UTF-8 (byte N)" unless `text` is
// well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
absl::Status CheckUtf8(absl::string_view text, absl::string_view field);

}  // namespace topiary
