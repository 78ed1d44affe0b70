// A caching CPU allocator for tensor buffers.
//
// Why: every large tensor libtorch frees goes back to the kernel (glibc
// serves allocations above 32 MB, and those of non-main arenas, with mmap
// and munmap), so the next step touches fresh pages again. On a VM a page
// fault costs microseconds: a 107M-parameter training step took ~160,000
// faults (0.6 GB of fresh pages) per step. This allocator keeps large
// buffers (>= 1 MiB) mapped after they are freed and hands them out again to
// requests of about the same size, on transparent huge pages where the
// kernel allows (madvise). Training allocates the same sizes every step, so
// after the first step it faults no more. Smaller requests go to libtorch's
// default allocator.
//
// Bounded twice: a request that no cached buffer fits first unmaps cached
// buffers (largest first) until what is mapped stays within 5/4 of the peak
// in use (+64 MiB), so the process holds little more than plain malloc
// would (a 107M training step: 2.7 GB mapped for a 2.4 GB peak); and freed
// buffers are kept only up to TOPIARY_CPU_CACHE_MB (default 4096).
// ReleaseCachedCpuMemory() unmaps them all.
#pragma once

#include <cstdint>

namespace topiary::model {

// Makes the caching allocator libtorch's CPU allocator for this process
// (tensors allocated before keep their own deleter). Idempotent.
void InstallCachingCpuAllocator();

struct CpuCacheStats {
  int64_t hits = 0;               // large requests served from the cache
  int64_t misses = 0;             // large requests that mapped new memory
  int64_t in_use_bytes = 0;       // large buffers handed out and not yet freed
  int64_t cached_bytes = 0;       // large buffers freed and kept for reuse
  int64_t peak_in_use_bytes = 0;  // the most large-buffer bytes in use at once
};
CpuCacheStats GetCpuCacheStats();

// Unmaps every cached (free) buffer.
void ReleaseCachedCpuMemory();

// The cap on cached bytes (for tests; the default comes from the environment).
void SetCpuCacheLimit(int64_t bytes);

}  // namespace topiary::model
