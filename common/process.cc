#include "common/process.h"

#include <malloc.h>

namespace topiary {

void TuneMalloc() {
  // Allocations below 2 GB come from the heap (glibc 2.36 accepts this for
  // the main arena; it keeps logits-sized buffers out of mmap).
  mallopt(M_MMAP_THRESHOLD, static_cast<int>((1u << 31) - 1));
  mallopt(M_TRIM_THRESHOLD, 1 << 30);            // give memory back only past 1 GB of free top
  mallopt(M_TOP_PAD, 64 << 20);
}

}  // namespace topiary
