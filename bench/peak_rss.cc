// peak_rss RESULT_FILE COMMAND [ARGS...]: runs COMMAND, writes its peak
// resident set in kB and the bytes it read from storage (ru_inblock, 512-byte
// units: what its reads, faults and read-ahead fetched from disk, not what
// the page cache served) to RESULT_FILE as "KB BYTES", and exits with its
// exit status (128+N when killed by signal N).
//
// Why a process of its own: a child's ru_maxrss starts from the memory its
// parent had when it was created (posix_spawn shares the parent's address
// space until exec, whose high-water mark the kernel carries over), so a
// bench that has generated a large checkpoint would report its own peak as
// the command's. This program is small, so the peak it reports is the
// command's.
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <cstdio>

extern char** environ;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: peak_rss RESULT_FILE COMMAND [ARGS...]\n");
    return 2;
  }
  pid_t pid = -1;
  if (posix_spawnp(&pid, argv[2], nullptr, nullptr, argv + 2, environ) != 0) {
    std::fprintf(stderr, "peak_rss: cannot run %s\n", argv[2]);
    return 127;
  }
  int status = 0;
  struct rusage usage {};
  if (wait4(pid, &status, 0, &usage) != pid) return 127;
  if (FILE* f = std::fopen(argv[1], "w")) {
    std::fprintf(f, "%ld %lld\n", usage.ru_maxrss, static_cast<long long>(usage.ru_inblock) * 512);
    std::fclose(f);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
