// A journal of what reached the disk, for power-cut tests, loaded with
// LD_PRELOAD: each successful fsync/fdatasync of a regular file appends
// "S <size> <path>" (the file's size once the sync returned: everything
// written before it is durable) and each successful rename appends
// "R <from>\t<to>", to the file named by TOPIARY_SYNC_JOURNAL. A test that
// kills the process can then cut every file back to what a power loss would
// have left (tests/testing/power_cut.h). Paths are absolute: relative
// renames are resolved against the working directory.
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

template <typename F>
F Next(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

int JournalFd() {
  static const int fd = [] {
    const char* path = getenv("TOPIARY_SYNC_JOURNAL");
    return path == nullptr ? -1 : open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  }();
  return fd;
}

// One line in one write(2) on an O_APPEND descriptor: lines of concurrent
// threads do not interleave.
void Append(const char* line, size_t n) {
  static auto real_write = Next<ssize_t (*)(int, const void*, size_t)>("write");
  const int fd = JournalFd();
  if (fd >= 0) (void)real_write(fd, line, n);
}

void NoteSync(int fd) {
  if (JournalFd() < 0) return;
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof(path) - 1);
  if (n <= 0) return;
  path[n] = '\0';
  char line[PATH_MAX + 64];
  const int len = snprintf(line, sizeof(line), "S %lld %s\n", static_cast<long long>(st.st_size), path);
  if (len > 0 && static_cast<size_t>(len) < sizeof(line)) Append(line, static_cast<size_t>(len));
}

void Absolute(const char* p, char* out, size_t size) {
  if (p[0] == '/') {
    snprintf(out, size, "%s", p);
    return;
  }
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof(cwd)) == nullptr) cwd[0] = '\0';
  snprintf(out, size, "%s/%s", cwd, p);
}

}  // namespace

extern "C" {

int fsync(int fd) {
  static auto real = Next<int (*)(int)>("fsync");
  const int r = real(fd);
  if (r == 0) NoteSync(fd);
  return r;
}

int fdatasync(int fd) {
  static auto real = Next<int (*)(int)>("fdatasync");
  const int r = real(fd);
  if (r == 0) NoteSync(fd);
  return r;
}

int rename(const char* from, const char* to) {
  static auto real = Next<int (*)(const char*, const char*)>("rename");
  const int r = real(from, to);
  if (r == 0 && JournalFd() >= 0) {
    char a[PATH_MAX], b[PATH_MAX], line[2 * PATH_MAX + 8];
    Absolute(from, a, sizeof(a));
    Absolute(to, b, sizeof(b));
    const int len = snprintf(line, sizeof(line), "R %s\t%s\n", a, b);
    if (len > 0 && static_cast<size_t>(len) < sizeof(line)) Append(line, static_cast<size_t>(len));
  }
  return r;
}

}  // extern "C"
