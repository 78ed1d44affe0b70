#include "common/file_util.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace topiary {
namespace {

TEST(FileUtil, AtomicWriteThenRead) {
  auto dir = MakeTempDir("topiary-file-util");
  ASSERT_TRUE(dir.ok()) << dir.status();
  std::string path = *dir + "/a/b/c.txt";
  ASSERT_TRUE(MakeDirs(*dir + "/a/b").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  auto text = ReadFileToString(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "second");
  // No temporary files are left behind.
  int entries = 0;
  for (auto& e : std::filesystem::directory_iterator(*dir + "/a/b")) (void)e, ++entries;
  EXPECT_EQ(entries, 1);
  EXPECT_TRUE(RemoveAll(*dir).ok());
  EXPECT_FALSE(std::filesystem::exists(*dir));
}

TEST(FileUtil, ErrorsNameThePath) {
  auto r = ReadFileToString("/nonexistent/topiary/x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/topiary/x"), std::string::npos);
  auto w = WriteFileAtomically("/nonexistent/topiary/x", "data");
  EXPECT_FALSE(w.ok());
}

TEST(FileUtil, ReadRefusesOversizedFiles) {
  auto dir = MakeTempDir("topiary-file-util");
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(WriteFileAtomically(*dir + "/big", std::string(100, 'x')).ok());
  auto r = ReadFileToString(*dir + "/big", 10);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  RemoveAll(*dir).IgnoreError();
}

}  // namespace
}  // namespace topiary
