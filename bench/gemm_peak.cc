// Measures this machine's GEMM peak for fp32 (OpenBLAS) and bf16 (oneDNN).
// The peak is the denominator of every achieved-FLOP/s ratio Topiary reports.
#include <cstdio>

#include "bench/bench_util.h"
#include "worker/train/peak.h"

int main() {
  topiary::bench::SetupThreads();
  double fp32 = topiary::train::MeasureGemmPeak(torch::kFloat32);
  double bf16 = topiary::train::MeasureGemmPeak(torch::kBFloat16);
  std::printf("SUMMARY gemm_peak threads=%d fp32_gflops=%.1f bf16_gflops=%.1f\n", at::get_num_threads(), fp32 / 1e9,
              bf16 / 1e9);
  return 0;
}
