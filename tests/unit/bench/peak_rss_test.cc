// bench/peak_rss reports the peak of the command it runs, not of its parent.
// A child created by posix_spawn from a large process starts with the
// parent's resident high-water mark as its ru_maxrss, so a bench that had
// generated a checkpoint reported its own peak as every command's.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "testing/processes.h"
#include "testing/test_util.h"

namespace topiary {
namespace {

constexpr int64_t kParentMb = 400;  // this process, made large on purpose

int64_t ReportedKb(const std::string& file) {
  auto text = ReadFileToString(file);
  return text.ok() ? std::stoll(*text) : -1;
}

TEST(PeakRss, ReportsTheCommandNotItsParent) {
  auto big = std::make_unique<char[]>(kParentMb << 20);
  std::memset(big.get(), 1, kParentMb << 20);  // resident now
  testing::TempDir dir;
  const std::string result = dir.File("rss");
  auto r = testing::RunProcesses({{testing::BinDir() + "/peak_rss", result, "/bin/true"}}, dir.path(),
                                 std::chrono::seconds(60));
  ASSERT_EQ(r[0].exit_code, 0) << r[0].output;
  const int64_t kb = ReportedKb(result);
  std::printf("parent %ld MB resident; /bin/true reported at %ld kB (peak_rss itself at %ld kB)\n",
              static_cast<long>(kParentMb), static_cast<long>(kb), static_cast<long>(r[0].max_rss_kb));
  EXPECT_GT(kb, 0);
  EXPECT_LT(kb, 64 << 10);  // /bin/true is a few MB; the parent's 400 MB must not show
  EXPECT_GT(big[12345], 0);
}

TEST(PeakRss, PassesOnTheExitStatus) {
  testing::TempDir dir;
  const std::string result = dir.File("rss");
  auto r = testing::RunProcesses({{testing::BinDir() + "/peak_rss", result, "/bin/false"},
                                  {testing::BinDir() + "/peak_rss", result + "2", "/bin/sh", "-c", "kill -9 $$"},
                                  {testing::BinDir() + "/peak_rss", result + "3", "/nonexistent/command"},
                                  {testing::BinDir() + "/peak_rss"}},
                                 dir.path(), std::chrono::seconds(60));
  EXPECT_EQ(r[0].exit_code, 1);
  EXPECT_EQ(r[1].exit_code, 128 + 9);
  EXPECT_EQ(r[2].exit_code, 127);
  EXPECT_EQ(r[3].exit_code, 2);  // usage
}

}  // namespace
}  // namespace topiary
