// bench/peak_rss reports the peak of the command it runs, not of its parent.
// A child created by posix_spawn from a large process starts with the
// parent's resident high-water mark as its ru_maxrss, so a bench that had
// generated a checkpoint reported its own peak as every command's.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "common/file_util.h"
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

// The bytes the command read from storage: a cold file read by `cat` counts,
// the same file read again from the page cache does not.
TEST(PeakRss, ReportsTheBytesTheCommandReadFromStorage) {
  testing::TempDir dir;
  const std::string file = dir.File("data");
  {
    std::string bytes(16 << 20, 'x');
    ASSERT_TRUE(WriteFileAtomically(file, bytes).ok());
    const int fd = ::open(file.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  auto read_bytes = [&](const std::string& result) {
    auto r = testing::RunProcesses(
        {{testing::BinDir() + "/peak_rss", result, "/bin/sh", "-c", "cat '" + file + "' > /dev/null"}}, dir.path(),
        std::chrono::seconds(60));
    EXPECT_EQ(r[0].exit_code, 0);
    auto text = ReadFileToString(result);
    long kb = 0;
    long long read = -1;
    EXPECT_TRUE(text.ok() && std::sscanf(text->c_str(), "%ld %lld", &kb, &read) == 2) << text.status();
    return read;
  };
  {  // is the file out of the page cache?
    const int fd = ::open(file.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    void* map = ::mmap(nullptr, 16 << 20, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    ASSERT_NE(map, MAP_FAILED);
    std::vector<unsigned char> in((16 << 20) / ::sysconf(_SC_PAGESIZE));
    ASSERT_EQ(::mincore(map, 16 << 20, in.data()), 0);
    ::munmap(map, 16 << 20);
    if (std::count_if(in.begin(), in.end(), [](unsigned char v) { return v & 1; }) > in.size() / 2) {
      GTEST_SKIP() << "the file stayed cached after POSIX_FADV_DONTNEED (tmpfs?)";
    }
  }
  const long long cold = read_bytes(dir.File("cold")), warm = read_bytes(dir.File("warm"));
  EXPECT_GE(cold, 15 << 20);
  EXPECT_LT(warm, 1 << 20);
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
