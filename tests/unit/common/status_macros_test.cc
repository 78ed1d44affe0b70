#include "common/status_macros.h"

#include <gtest/gtest.h>

namespace topiary {
namespace {

absl::StatusOr<int> Half(int x) {
  if (x % 2) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

absl::Status CheckQuarter(int x, int* out) {
  ASSIGN_OR_RETURN(*out, Quarter(x));
  RETURN_IF_ERROR(x > 100 ? absl::OutOfRangeError("big") : absl::OkStatus());
  return absl::OkStatus();
}

TEST(StatusMacros, PropagateErrorsAndValues) {
  EXPECT_EQ(*Quarter(12), 3);
  EXPECT_EQ(Quarter(6).status().message(), "odd");
  int out = 0;
  EXPECT_TRUE(CheckQuarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  EXPECT_EQ(CheckQuarter(104, &out).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(CheckQuarter(10, &out).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace topiary
