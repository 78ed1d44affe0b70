// Parsing of human-written quantities used in specs and flags:
// "94B" tokens, "100M", "4.5e9" parameters, "5GB" shard sizes.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace topiary {

// Parses a non-negative count with an optional decimal suffix K, M, B/G, T
// (powers of 1000), or scientific notation: "20M" -> 20000000, "4.5e9",
// "1152". The result must be a whole number. `field` names the input in errors.
absl::StatusOr<int64_t> ParseCount(absl::string_view text, absl::string_view field);

// Parses a byte size with suffix B, KB, MB, GB, TB (powers of 1000) or
// KiB, MiB, GiB, TiB (powers of 1024): "5GB", "512MiB", "4096".
absl::StatusOr<int64_t> ParseBytes(absl::string_view text, absl::string_view field);

// Formats a count the way ParseCount reads it: 20000000 -> "20M", 1536 -> "1.54K".
std::string FormatCount(double count);

}  // namespace topiary
