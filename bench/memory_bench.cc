// What a user's process sees when the model is most of the machine: a
// random-weight bf16 checkpoint of a real shape is generated once, then each
// command runs as a fresh `topiary` process (warm page cache), and its wall
// time and peak resident set (ru_maxrss) are reported against the
// checkpoint's size and against `cat` of the same files:
//   - load to first token: `topiary generate --max-new-tokens 1 --dtype bf16`,
//     over process start-up (`topiary-compute version`) + `cat`;
//   - `topiary eval --dtype bf16` and `--dtype fp32` (a bf16 model widened
//     one weight at a time) on 2 windows of 32 tokens;
//   - `topiary importance` (fp32 statistics) on 2 sequences of 32 tokens.
//
//   memory_bench [--shape 1b|8b] [--dir DIR] [--data U32_TOKENS] [--topiary PATH]
//
// --shape 8b is Llama-3.1-8B's (16 GB, 4 shards; about 2 minutes to
// generate); the default 1b is Llama-3.2-1B's (2.5 GB). With --dir, the
// checkpoint is kept in DIR/model and reused by the next run. Prints one
// SUMMARY line.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <unistd.h>

#include "bench/bench_util.h"
#include "common/file_util.h"
#include "common/process.h"
#include "worker/model/checkpoint.h"

namespace {

using namespace topiary;

struct Measured {
  double seconds = 1e30, rss_gb = 0;
};

// Best time of `runs` fresh processes, and the largest peak RSS among them.
Measured Run(const std::vector<std::string>& argv, int runs) {
  Measured m;
  for (int i = 0; i < runs; ++i) {
    bench::ProcessRun r = bench::RunProcess(argv);
    if (r.exit_code != 0) {
      std::string line;
      for (const auto& a : argv) line += a + " ";
      std::fprintf(stderr, "memory_bench: exit %d from: %s\n", r.exit_code, line.c_str());
      std::exit(1);
    }
    m.seconds = std::min(m.seconds, r.seconds);
    m.rss_gb = std::max(m.rss_gb, static_cast<double>(r.max_rss_kb) * 1024 / 1e9);
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  TuneMalloc();
  bench::SetupThreads();
  std::string shape = "1b", dir, topiary = bench::BinDir() + "/topiary", data;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--shape")
      shape = v;
    else if (k == "--dir")
      dir = v;
    else if (k == "--data")
      data = v;
    else if (k == "--topiary")
      topiary = v;
  }
  const bool keep = !dir.empty();
  if (dir.empty()) dir = *MakeTempDir("topiary-memory-bench");
  const model::ModelConfig c = bench::LlamaShape(shape == "8b" ? "llama-3.1-8b" : "llama-3.2-1b");
  const std::string model = dir + "/model";
  auto existing = model::LoadConfig(model);
  if (!existing.ok() || existing->hidden_size != c.hidden_size || existing->num_hidden_layers != c.num_hidden_layers) {
    RemoveAll(model).IgnoreError();
    if (absl::Status st = bench::WriteRandomCheckpoint(c, model); !st.ok()) {
      std::fprintf(stderr, "memory_bench: generating %s: %s\n", model.c_str(), std::string(st.message()).c_str());
      return 1;
    }
  }
  if (data.empty()) {  // the held-out KJV tokens (u16), widened to u32 as a 128k vocabulary needs
    auto u16 = ReadFileToString(bench::BinDir() + "/../kjv/kjv-val.bin", size_t{1} << 30);
    if (!u16.ok()) return 1;
    std::string u32;
    for (size_t i = 0; i + 1 < u16->size(); i += 2) u32 += std::string{(*u16)[i], (*u16)[i + 1], 0, 0};
    data = dir + "/tokens.bin";
    if (!WriteFileAtomically(data, u32).ok()) return 1;
  }
  const std::vector<std::string> files = bench::WeightFiles(model);
  const double gb = static_cast<double>(bench::TotalBytes(files)) / 1e9;

  std::vector<std::string> cat = {"cat"};
  cat.insert(cat.end(), files.begin(), files.end());
  Run(cat, 1);  // warms the page cache
  const Measured cat_m = Run(cat, 3);
  const Measured start = Run({topiary + "-compute", "version"}, 3);
  const Measured first = Run({topiary, "generate", "--model", model, "--prompt", "In the beginning", "--dtype", "bf16",
                              "--max-new-tokens", "1", "--greedy"},
                             2);
  auto eval = [&](const char* dtype) {
    return Run({topiary, "eval", "--model", model, "--data", data, "--dtype", dtype, "--seq-len", "32", "--max-windows",
                "2", "--batch", "2"},
               1);
  };
  const Measured eval_bf16 = eval("bf16"), eval_fp32 = eval("fp32");
  const Measured importance = Run({topiary, "importance", "--model", model, "--data", data, "--samples", "2",
                                   "--seq-len", "32", "--batch", "2", "--out", dir + "/importance"},
                                  1);
  std::printf(
      "SUMMARY memory_bench shape=%s checkpoint_gb=%.2f cat_s=%.2f startup_s=%.2f first_token_s=%.2f "
      "first_token_over_startup_plus_cat=%.2f first_token_rss_over_ckpt=%.2f eval_bf16_s=%.2f "
      "eval_bf16_rss_over_ckpt=%.2f eval_fp32_s=%.2f eval_fp32_rss_over_ckpt=%.2f importance_s=%.2f "
      "importance_rss_gb=%.2f importance_rss_over_ckpt=%.2f\n",
      shape.c_str(), gb, cat_m.seconds, start.seconds, first.seconds, first.seconds / (start.seconds + cat_m.seconds),
      first.rss_gb / gb, eval_bf16.seconds, eval_bf16.rss_gb / gb, eval_fp32.seconds, eval_fp32.rss_gb / gb,
      importance.seconds, importance.rss_gb, importance.rss_gb / gb);
  if (!keep) RemoveAll(dir).IgnoreError();
  return 0;
}
