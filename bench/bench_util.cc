#include "bench/bench_util.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

namespace topiary::bench {

void SetupThreads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
}

double TimeMedian(const std::function<void()>& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double TimeBest(const std::function<void()>& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  double best = 1e30;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

double MeasureGemmPeak(torch::Dtype dtype, int64_t n) {
  torch::NoGradGuard no_grad;
  auto a = torch::randn({n, n}).to(dtype);
  auto b = torch::randn({n, n}).to(dtype);
  auto c = torch::empty({n, n}, a.options());
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    best = std::min(best, TimeMedian([&] { at::mm_out(c, a, b); }, 1, 5));
  }
  return 2.0 * n * n * n / best;
}

}  // namespace topiary::bench
