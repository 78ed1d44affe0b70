// A failing disk for tests, loaded with LD_PRELOAD: while the file named by
// TOPIARY_FAILING_FS_FLAG exists, writes and syncs of files under the
// directory TOPIARY_FAILING_FS_DIR fail with ENOSPC (the disk is full);
// everything else (sockets, other files) goes through. Removing the flag
// file "frees the disk".
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

namespace {

bool Failing(int fd) {
  static const char* flag = getenv("TOPIARY_FAILING_FS_FLAG");
  static const char* dir = getenv("TOPIARY_FAILING_FS_DIR");
  if (flag == nullptr || dir == nullptr || access(flag, F_OK) != 0) return false;
  char link[64], path[4096];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof(path) - 1);
  if (n <= 0) return false;
  path[n] = '\0';
  return strncmp(path, dir, strlen(dir)) == 0;
}

template <typename F>
F Next(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

ssize_t write(int fd, const void* buf, size_t count) {
  static auto real = Next<ssize_t (*)(int, const void*, size_t)>("write");
  if (Failing(fd)) return errno = ENOSPC, -1;
  return real(fd, buf, count);
}

ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  static auto real = Next<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite");
  if (Failing(fd)) return errno = ENOSPC, -1;
  return real(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void* buf, size_t count, off64_t offset) {
  static auto real = Next<ssize_t (*)(int, const void*, size_t, off64_t)>("pwrite64");
  if (Failing(fd)) return errno = ENOSPC, -1;
  return real(fd, buf, count, offset);
}

ssize_t writev(int fd, const struct iovec* iov, int iovcnt) {
  static auto real = Next<ssize_t (*)(int, const struct iovec*, int)>("writev");
  if (Failing(fd)) return errno = ENOSPC, -1;
  return real(fd, iov, iovcnt);
}

int fsync(int fd) {
  static auto real = Next<int (*)(int)>("fsync");
  if (Failing(fd)) return errno = ENOSPC, -1;
  return real(fd);
}

int fdatasync(int fd) {
  static auto real = Next<int (*)(int)>("fdatasync");
  if (Failing(fd)) return errno = ENOSPC, -1;
  return real(fd);
}

}  // extern "C"
