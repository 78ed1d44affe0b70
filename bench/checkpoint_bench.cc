// Loading and saving a ~1.2 GB bf16 Hugging Face checkpoint, against `cat`
// reading the same bytes (both with a warm page cache, measured in this run).
//   checkpoint_bench [DIR]   (default: a temporary directory, removed after)
// Prints one SUMMARY line.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "bench/bench_util.h"
#include "common/file_util.h"
#include "common/process.h"
#include "worker/model/caching_allocator.h"
#include "worker/model/checkpoint.h"

namespace {

double Seconds(const std::function<void()>& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace topiary;
  TuneMalloc();
  model::InstallCachingCpuAllocator();
  bench::SetupThreads();
  std::string dir = argc > 1 ? argv[1] : *MakeTempDir("topiary-ckpt-bench");
  model::ModelConfig c;
  c.hidden_size = 2048, c.intermediate_size = 5632, c.num_attention_heads = 16, c.num_key_value_heads = 4;
  c.head_dim = 128, c.num_hidden_layers = 10, c.vocab_size = 32000, c.max_position_embeddings = 4096;
  double save_s;
  {
    model::LlamaModel m = model::InitModel(c, 0, at::kBFloat16);
    save_s = Seconds([&] {
      auto st = model::SaveCheckpoint(m, dir, {});
      if (!st.ok()) std::fprintf(stderr, "save failed: %s\n", std::string(st.message()).c_str()), std::exit(1);
    });
  }
  const std::string file = dir + "/model.safetensors";
  const double bytes = static_cast<double>(std::filesystem::file_size(file));
  const std::string cat = "cat " + file + " > /dev/null";
  double cat_s = 1e9, load_s = 1e9;
  for (int rep = 0; rep < 3; ++rep) {  // the first pass warms the page cache
    cat_s = std::min(cat_s, Seconds([&] { (void)std::system(cat.c_str()); }));
    load_s = std::min(load_s, Seconds([&] {
                        auto m = model::LoadCheckpoint(dir, at::kBFloat16);
                        if (!m.ok()) std::fprintf(stderr, "load failed\n"), std::exit(1);
                      }));
  }
  if (argc <= 1) RemoveAll(dir).IgnoreError();
  std::printf(
      "SUMMARY checkpoint_bench bytes=%.2fGB save_s=%.2f load_s=%.3f cat_s=%.3f load_vs_cat=%.2f "
      "load_gbps=%.2f\n",
      bytes / 1e9, save_s, load_s, cat_s, load_s / cat_s, bytes / load_s / 1e9);
  return 0;
}
