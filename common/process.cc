#include "common/process.h"

#include <malloc.h>

#include <cstdio>

namespace topiary {

void TuneMalloc() {
  // Allocations below 2 GB come from the heap (glibc 2.36 accepts this for
  // the main arena; it keeps logits-sized buffers out of mmap).
  mallopt(M_MMAP_THRESHOLD, static_cast<int>((1u << 31) - 1));
  mallopt(M_TRIM_THRESHOLD, 1 << 30);            // give memory back only past 1 GB of free top
  mallopt(M_TOP_PAD, 64 << 20);
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
