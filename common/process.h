// Process-wide setup every Topiary binary calls first in main.
#pragma once

#include <cstdint>

namespace topiary {

// Keeps freed memory in the heap instead of returning it to the kernel at
// once. libtorch allocates and frees activation-sized buffers on every step;
// with glibc's defaults each one is a fresh mmap and page faults, which made
// a training step 2.5x slower (measured with bf16 training of the bundled
// model: 1.7k vs 4.2k tokens/s).
void TuneMalloc();

// For fp32 work on CPU: libgomp's worker threads spin after every parallel
// region while OpenBLAS's own threads run the GEMMs, and on 2 cores they
// fight (measured: zero-shot eval 38 s -> 12 s, fp32 importance on the
// bundled model 0.28 -> 0.46 of peak with OMP_WAIT_POLICY=PASSIVE). libgomp
// reads the policy only at load, so when it is unset this sets it and
// re-executes the program with the same arguments (about 0.7 s). bf16 work
// (oneDNN on OpenMP) is 6-8% faster spinning: callers use this for fp32 only.
// Returns only if the variable was already set or exec failed.
void ReexecWithPassiveOpenMp();

// Memory this process may still allocate: MemAvailable, capped by the
// cgroup's memory.max minus memory.current when a limit is set; -1 if unknown.
int64_t AvailableMemoryBytes();
// The machine's memory (MemTotal), capped by the cgroup's memory.max; -1 if unknown.
int64_t TotalMemoryBytes();

// This process's peak resident set in bytes (VmHWM), or 0 if unknown.
// Reported by commands whose memory matters (prune).
int64_t PeakRssBytes();

}  // namespace topiary
