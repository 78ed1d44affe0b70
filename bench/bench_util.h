// Shared benchmark helpers: the GEMM peak that every benchmark reports its
// achieved FLOP/s against (docs/design.md, "How speed is judged"), timing, and thread setup.
// Not thread-safe; for benchmark mains only.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/model/config.h"

namespace topiary::bench {

// Sets libtorch's intra-op threads to `threads` (0: all hardware threads).
// Debian's libtorch defaults to one thread; every binary sets this.
void SetupThreads(int threads = 0);

// The GEMM peak: train::MeasureGemmPeak (worker/train/peak.h).

// Runs `fn` `warmup` times, then times `iters` calls; returns seconds per call
// (the median of the timed calls).
double TimeMedian(const std::function<void()>& fn, int warmup, int iters);

// As TimeMedian, but the fastest call: on a shared 2-core VM, interference
// only ever adds time, so the minimum is the steadiest estimate. The peers
// report the same statistic.
double TimeBest(const std::function<void()>& fn, int warmup, int iters);

// The flags the model benchmarks share: --shape, --mode, --dtype, --batch,
// --seq, --iters (each `--flag value`); `defaults` holds each bench's own.
struct BenchArgs {
  std::string shape = "100m", mode = "train", dtype = "fp32";
  int64_t batch = 4, seq = 512;
  int iters = 5;
};
BenchArgs ParseBenchArgs(int argc, char** argv, BenchArgs defaults);

// The benchmark shapes: "teacher" (models/kjv-llama-8m: hidden 256, 8
// layers) and "100m" (~107M parameters: hidden 1024, MLP 2816, 16 heads
// over 4 KV groups, 8 layers, vocab 8192).
model::ModelConfig BenchShape(const std::string& name);

// Real model shapes, for measuring at the sizes users bring: "llama-3.2-1b"
// (1.24B parameters, tied embeddings) and "llama-3.1-8b" (8.03B: hidden 4096,
// MLP 14336, 32 layers, 32 heads over 8 KV groups, vocab 128256), bf16.
model::ModelConfig LlamaShape(const std::string& name);

// Writes a checkpoint of `config` with random weights (normal(0, 0.02), norms
// 1) in bf16, one tensor at a time, in shards of at most `shard_bytes`, with
// the bundled model's tokenizer. Never committed: made by the benches that
// need it.
absl::Status WriteRandomCheckpoint(const model::ModelConfig& config, const std::string& dir,
                                   int64_t shard_bytes = 4'500'000'000);

// The directory of this benchmark's binary (where the built tools are).
std::string BinDir();

// The *.safetensors files of a checkpoint and their total size.
std::vector<std::string> WeightFiles(const std::string& dir);
int64_t TotalBytes(const std::vector<std::string>& files);
int64_t DirectoryBytes(const std::string& dir);

// Drops the files' clean pages from the page cache (posix_fadvise), so the
// next read comes from the disk: a cold-cache measurement without root.
void EvictFromPageCache(const std::vector<std::string>& files);

// Runs a program to completion (stdout/stderr to /dev/null) and reports its
// wall time, peak resident set (ru_maxrss) and the bytes it read from
// storage (ru_inblock). exit_code -1 when it could not start or did not exit
// normally.
struct ProcessRun {
  int exit_code = -1;
  double seconds = 0;
  int64_t max_rss_kb = 0;
  int64_t read_bytes = 0;
};
ProcessRun RunProcess(const std::vector<std::string>& argv);

}  // namespace topiary::bench
