#include "worker/data/token_file.h"

#include <gtest/gtest.h>

#include <fstream>

#include "testing/test_util.h"

namespace topiary::data {
namespace {

using topiary::testing::TempDir;

TEST(TokenFile, U16AndU32RoundTrip) {
  TempDir dir;
  std::vector<int64_t> ids = {0, 1, 65535, 7, 42};
  ASSERT_TRUE(WriteTokenFile(dir.File("a.bin"), ids, TokenFormat::kU16).ok());
  auto f = TokenFile::Open(dir.File("a.bin"), TokenFormat::kAuto, 65536);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->size(), 5);
  std::vector<int64_t> out(5);
  ASSERT_TRUE((*f)->Read(0, 5, out.data()).ok());
  EXPECT_EQ(out, ids);
  std::vector<int64_t> big = {70000, 3, 128255};
  ASSERT_TRUE(WriteTokenFile(dir.File("b.bin"), big, TokenFormat::kU32).ok());
  auto g = TokenFile::Open(dir.File("b.bin"), TokenFormat::kAuto, 128256);
  ASSERT_TRUE(g.ok());
  std::vector<int64_t> out2(3);
  ASSERT_TRUE((*g)->Read(0, 3, out2.data()).ok());
  EXPECT_EQ(out2, big);
  EXPECT_FALSE(WriteTokenFile(dir.File("c.bin"), big, TokenFormat::kU16).ok());
}

TEST(TokenFile, ClearErrors) {
  TempDir dir;
  std::ofstream(dir.File("odd.bin"), std::ios::binary) << "abc";
  auto t = TokenFile::Open(dir.File("odd.bin"), TokenFormat::kU16, 100);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("truncated"), std::string::npos);
  EXPECT_FALSE(TokenFile::Open(dir.File("absent.bin"), TokenFormat::kU16, 100).ok());
  EXPECT_FALSE(TokenFile::Open(dir.File("odd.bin"), TokenFormat::kU16, 100000).ok());  // u16 too narrow

  ASSERT_TRUE(WriteTokenFile(dir.File("v.bin"), {1, 2, 99, 3}, TokenFormat::kU16).ok());
  auto f = TokenFile::Open(dir.File("v.bin"), TokenFormat::kU16, 50);
  ASSERT_TRUE(f.ok());
  std::vector<int64_t> out(4);
  absl::Status st = (*f)->Read(0, 4, out.data());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("token 2 has id 99"), std::string::npos) << st;
  EXPECT_EQ((*f)->Read(3, 2, out.data()).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*f)->Read(-1, 1, out.data()).code(), absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace topiary::data
