// Test helpers that look at the page cache: what of a file is cached, how to
// drop it, and whether a directory takes O_DIRECT writes.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace topiary::testing {

// Pages of [p, p + n) (a mapping) in the page cache.
inline size_t ResidentPages(const void* p, size_t n) {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t a = reinterpret_cast<uintptr_t>(p) / page * page;
  std::vector<unsigned char> in((reinterpret_cast<uintptr_t>(p) + n - a + page - 1) / page);
  if (::mincore(reinterpret_cast<void*>(a), in.size() * page, in.data()) != 0) return 0;
  size_t resident = 0;
  for (unsigned char c : in) resident += c & 1;
  return resident;
}

// Pages of the file at `path` in the page cache (mapping it touches none).
inline size_t FilePagesCached(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return 0;
  const off_t size = ::lseek(fd, 0, SEEK_END);
  void* map = size > 0 ? ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
  ::close(fd);
  if (map == MAP_FAILED) return 0;
  const size_t pages = ResidentPages(map, static_cast<size_t>(size));
  ::munmap(map, static_cast<size_t>(size));
  return pages;
}

// Writes the file's dirty pages and drops all of them from the page cache.
inline bool DropFromPageCache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0 && ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
  ::close(fd);
  return ok;
}

// Whether files in `dir` can be written with O_DIRECT.
inline bool DirectWritesWork(const std::string& dir) {
  const std::string path = dir + "/direct-probe";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0644);
  void* block = std::aligned_alloc(4096, 4096);
  std::memset(block, 0, 4096);
  const bool works = fd >= 0 && ::pwrite(fd, block, 4096, 0) == 4096;
  std::free(block);
  if (fd >= 0) ::close(fd);
  ::unlink(path.c_str());
  return works;
}

}  // namespace topiary::testing
