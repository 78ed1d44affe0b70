#include "common/process.h"

#include <malloc.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace topiary {

void TuneMalloc() {
  // Allocations below 2 GB come from the heap (glibc 2.36 accepts this for
  // the main arena; it keeps logits-sized buffers out of mmap).
  mallopt(M_MMAP_THRESHOLD, static_cast<int>((1u << 31) - 1));
  mallopt(M_TRIM_THRESHOLD, 1 << 30);  // give memory back only past 1 GB of free top
  mallopt(M_TOP_PAD, 64 << 20);
}

void ReexecWithPassiveOpenMp() {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  std::string cmdline;
  if (FILE* f = std::fopen("/proc/self/cmdline", "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) cmdline.append(buf, n);
    std::fclose(f);
  }
  std::vector<char*> argv;
  for (size_t at = 0; at < cmdline.size(); at = cmdline.find('\0', at) + 1) argv.push_back(&cmdline[at]);
  if (argv.empty()) return;
  argv.push_back(nullptr);
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  std::fflush(nullptr);
  ::execv("/proc/self/exe", argv.data());
  ::unsetenv("OMP_WAIT_POLICY");  // exec failed: carry on as we are
}

namespace {

int64_t MeminfoBytes(const char* key) {
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return -1;
  char line[256];
  char name[64];
  long long kb = -1, v = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "%63[^:]: %lld", name, &v) == 2 && std::string(name) == key) {
      kb = v;
      break;
    }
  }
  std::fclose(f);
  return kb < 0 ? -1 : static_cast<int64_t>(kb) * 1024;
}

// A number from a cgroup v2 file; -1 for "max" or when absent.
int64_t CgroupNumber(const char* path) {
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return -1;
  long long v = -1;
  if (std::fscanf(f, "%lld", &v) != 1) v = -1;
  std::fclose(f);
  return v;
}

}  // namespace

int64_t AvailableMemoryBytes() {
  int64_t avail = MeminfoBytes("MemAvailable");
  const int64_t limit = CgroupNumber("/sys/fs/cgroup/memory.max");
  const int64_t used = CgroupNumber("/sys/fs/cgroup/memory.current");
  if (limit > 0 && used >= 0) {
    const int64_t left = limit > used ? limit - used : 0;
    avail = avail < 0 ? left : (left < avail ? left : avail);
  }
  return avail;
}

int64_t TotalMemoryBytes() {
  int64_t total = MeminfoBytes("MemTotal");
  const int64_t limit = CgroupNumber("/sys/fs/cgroup/memory.max");
  if (limit > 0 && (total < 0 || limit < total)) total = limit;
  return total;
}

int64_t PeakRssBytes() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  long long kb = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "VmHWM: %lld kB", &kb) == 1) break;
  }
  std::fclose(f);
  return static_cast<int64_t>(kb) * 1024;
}

}  // namespace topiary
