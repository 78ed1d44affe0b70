#include "common/units.h"

#include <cmath>
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace topiary {
namespace {

// Splits "4.5e9GB" into a number and a suffix; fails on anything else.
absl::StatusOr<std::pair<double, std::string>> SplitNumber(absl::string_view text, absl::string_view field) {
  std::string s(absl::StripAsciiWhitespace(text));
  if (s.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty value"));
  const char* begin = s.c_str();
  char* end = nullptr;
  double value = std::strtod(begin, &end);
  if (end == begin || !std::isfinite(value)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", text, "' is not a number"));
  }
  if (value < 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", text, "' is negative"));
  }
  return std::make_pair(value, std::string(absl::StripAsciiWhitespace(end)));
}

absl::StatusOr<int64_t> Scale(double value, double mult, absl::string_view text, absl::string_view field) {
  double v = value * mult;
  if (v > 9.2e18) return absl::InvalidArgumentError(absl::StrCat(field, ": '", text, "' is too large"));
  double rounded = std::round(v);
  if (std::fabs(v - rounded) > 1e-6 * std::max(1.0, v)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": '", text, "' is not a whole number"));
  }
  return static_cast<int64_t>(rounded);
}

}  // namespace

absl::StatusOr<int64_t> ParseCount(absl::string_view text, absl::string_view field) {
  auto split = SplitNumber(text, field);
  if (!split.ok()) return split.status();
  auto [value, suffix] = *split;
  std::string u = absl::AsciiStrToUpper(suffix);
  double mult = 1;
  if (u.empty())
    mult = 1;
  else if (u == "K")
    mult = 1e3;
  else if (u == "M")
    mult = 1e6;
  else if (u == "B" || u == "G")
    mult = 1e9;
  else if (u == "T")
    mult = 1e12;
  else
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": unknown suffix '", suffix, "' in '", text, "' (use K, M, B or T)"));
  return Scale(value, mult, text, field);
}

absl::StatusOr<int64_t> ParseBytes(absl::string_view text, absl::string_view field) {
  auto split = SplitNumber(text, field);
  if (!split.ok()) return split.status();
  auto [value, suffix] = *split;
  std::string u = absl::AsciiStrToUpper(suffix);
  double mult;
  if (u.empty() || u == "B")
    mult = 1;
  else if (u == "KB")
    mult = 1e3;
  else if (u == "MB")
    mult = 1e6;
  else if (u == "GB")
    mult = 1e9;
  else if (u == "TB")
    mult = 1e12;
  else if (u == "KIB")
    mult = 1024.0;
  else if (u == "MIB")
    mult = 1024.0 * 1024;
  else if (u == "GIB")
    mult = 1024.0 * 1024 * 1024;
  else if (u == "TIB")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else
    return absl::InvalidArgumentError(absl::StrCat(field, ": unknown size suffix '", suffix, "' in '", text, "'"));
  return Scale(value, mult, text, field);
}

std::string FormatCount(double count) {
  const char* suffixes[] = {"", "K", "M", "B", "T"};
  int i = 0;
  while (std::fabs(count) >= 1000 && i < 4) {
    count /= 1000;
    ++i;
  }
  if (i == 0) return absl::StrFormat("%.0f", count);
  std::string s = absl::StrFormat("%.3g", count);
  return absl::StrCat(s, suffixes[i]);
}

}  // namespace topiary
