#include "worker/train/peak.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace topiary::train {

double MeasureGemmPeak(at::ScalarType dtype, int64_t n) {
  torch::NoGradGuard no_grad;
  at::Tensor a = at::randn({n, n}).to(dtype), b = at::randn({n, n}).to(dtype);
  at::Tensor c = at::empty({n, n}, a.options());
  at::mm_out(c, a, b);  // warm-up
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<double> times;
    for (int i = 0; i < 5; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      at::mm_out(c, a, b);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    best = std::min(best, times[times.size() / 2]);
  }
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / best;
}

}  // namespace topiary::train
