#include "common/units.h"

#include <gtest/gtest.h>

namespace topiary {
namespace {

TEST(ParseCount, AcceptsSuffixesAndScientific) {
  EXPECT_EQ(*ParseCount("1152", "f"), 1152);
  EXPECT_EQ(*ParseCount("20M", "f"), 20'000'000);
  EXPECT_EQ(*ParseCount("94B", "f"), 94'000'000'000);
  EXPECT_EQ(*ParseCount("4.5e9", "f"), 4'500'000'000);
  EXPECT_EQ(*ParseCount("1.5k", "f"), 1500);
}

TEST(ParseCount, RejectsBadInputNamingTheField) {
  auto r = ParseCount("12Q", "distill.tokens");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("distill.tokens"), std::string::npos);
  EXPECT_FALSE(ParseCount("", "f").ok());
  EXPECT_FALSE(ParseCount("-3", "f").ok());
  EXPECT_FALSE(ParseCount("1.5", "f").ok());
  EXPECT_FALSE(ParseCount("abc", "f").ok());
  EXPECT_FALSE(ParseCount("1e30", "f").ok());
}

TEST(ParseBytes, DecimalAndBinaryUnits) {
  EXPECT_EQ(*ParseBytes("5GB", "f"), 5'000'000'000);
  EXPECT_EQ(*ParseBytes("512MiB", "f"), 512LL * 1024 * 1024);
  EXPECT_EQ(*ParseBytes("4096", "f"), 4096);
  EXPECT_FALSE(ParseBytes("5 parsecs", "f").ok());
}

TEST(FormatCount, RoundTripsCommonSizes) {
  EXPECT_EQ(FormatCount(20'000'000), "20M");
  EXPECT_EQ(FormatCount(999), "999");
  EXPECT_EQ(*ParseCount(FormatCount(4'500'000'000), "f"), 4'500'000'000);
}

}  // namespace
}  // namespace topiary
