// Importance estimation throughput: the observed forward pass that collects
// every activation statistic, against a plain forward of the same work (no
// observer, no lm_head) and against the GEMM peak of the same dtype measured
// in the same run.
//
//   importance_bench [--shape teacher|100m] [--dtype fp32|bf16] [--batch B] [--seq T] [--iters N]
//
// FLOPs per token (docs/design.md, "How speed is judged"): 2N + 4·L·T·C with N the block
// parameters (the pass stops at the final norm: no lm_head). Targets: FLOP/s
// over peak >= 0.5; hook overhead <= 15%. Prints one SUMMARY line.
#include <algorithm>
#include <cstdio>
#include <string>

#include "bench/bench_util.h"
#include "worker/train/peak.h"
#include "common/process.h"
#include "worker/compress/importance/activation_stats.h"
#include "worker/model/caching_allocator.h"
#include "worker/model/llama.h"

using namespace topiary;

int main(int argc, char** argv) {
  TuneMalloc();
  model::InstallCachingCpuAllocator();
  const bench::BenchArgs a = bench::ParseBenchArgs(argc, argv, {"100m", "observe", "fp32", 4, 256, 5});
  if (a.dtype != "bf16") ReexecWithPassiveOpenMp();  // as `topiary importance` does
  bench::SetupThreads();
  const torch::Dtype dtype = a.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  const model::ModelConfig c = bench::BenchShape(a.shape);
  const double peak = train::MeasureGemmPeak(dtype);
  torch::NoGradGuard no_grad;
  model::LlamaModel m = model::InitModel(c, 0, dtype, 0.02);
  at::Tensor tokens = at::randint(0, c.vocab_size, {a.batch, a.seq}, at::kLong);
  model::ForwardOptions plain;
  plain.return_hidden = true;
  compress::ActivationStats stats(c, {}, compress::MlpActivation::kDownProjInput);
  model::ForwardOptions observed = plain;
  observed.observer = &stats;
  // Interleaved, best of each: drift on a shared VM hits both alike.
  double t_plain = 1e30, t_obs = 1e30;
  for (int i = 0; i < a.iters + 1; ++i) {
    const double p = bench::TimeBest([&] { model::Forward(m, tokens, plain); }, i == 0 ? 1 : 0, 1);
    const double o = bench::TimeBest([&] { model::Forward(m, tokens, observed); }, i == 0 ? 1 : 0, 1);
    if (i > 0) t_plain = std::min(t_plain, p), t_obs = std::min(t_obs, o);
  }

  const model::ParamCounts n = model::CountParams(c);
  const double tokens_per_call = static_cast<double>(a.batch * a.seq);
  const double flops_per_token =
      2.0 * static_cast<double>(n.non_embedding()) + 4.0 * c.num_hidden_layers * a.seq * c.hidden_size;
  const double tps = tokens_per_call / t_obs;
  std::printf(
      "SUMMARY importance_bench shape=%s dtype=%s batch=%lld seq=%lld tokens_per_s=%.0f "
      "flops_over_peak=%.2f plain_flops_over_peak=%.2f hook_overhead=%.1f%% peak_gflops=%.0f\n",
      a.shape.c_str(), a.dtype.c_str(), static_cast<long long>(a.batch), static_cast<long long>(a.seq), tps,
      tps * flops_per_token / peak, tokens_per_call / t_plain * flops_per_token / peak, 100.0 * (t_obs / t_plain - 1),
      peak / 1e9);
  return 0;
}
