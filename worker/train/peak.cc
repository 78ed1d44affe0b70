#include "worker/train/peak.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "worker/model/fused_ops.h"

namespace topiary::train {

double MeasureGemmPeak(at::ScalarType dtype, int64_t n) {
  torch::NoGradGuard no_grad;
  at::Tensor a = at::randn({n, n}).to(dtype), b = at::randn({n, n}).to(dtype);
  at::Tensor c = at::empty({n, n}, a.options());
  // The route the model's GEMMs take: on a CPU without a native bf16 GEMM
  // they go through fp32 (model::MatMul), and so must the peak, or MFU
  // would divide by a reference loop's speed.
  const bool routed = dtype == at::kBFloat16 && !model::NativeBf16Gemm();
  auto product = [&] {
    if (routed)
      c = model::MatMul(a, b);
    else
      at::mm_out(c, a, b);
  };
  product();  // warm-up
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<double> times;
    for (int i = 0; i < 5; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      product();
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    best = std::min(best, times[times.size() / 2]);
  }
  return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / best;
}

}  // namespace topiary::train
