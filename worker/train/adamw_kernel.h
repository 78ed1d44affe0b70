// Internal: the fused AdamW update loop shared by AdamW and ShardedAdamW.
#pragma once

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace topiary::train::internal {

// The fused AdamW update over one tensor. G is float or c10::BFloat16; the
// weight W likewise (when W is float it is the master itself).
template <typename G, typename W>
void FusedUpdate(const G* g, float* m, float* v, float* master, W* w, int64_t n, float b1, float b2, float lr_bc1,
                 float inv_bc2, float eps, float decay, float scale) {
  at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float gi = static_cast<float>(g[i]) * scale;
      const float mi = b1 * m[i] + (1 - b1) * gi;
      const float vi = b2 * v[i] + (1 - b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      const float p = master[i] * decay - lr_bc1 * mi / (std::sqrt(vi * inv_bc2) + eps);
      master[i] = p;
      if constexpr (!std::is_same_v<W, float>) w[i] = static_cast<W>(p);
    }
  });
}

}  // namespace topiary::train::internal
