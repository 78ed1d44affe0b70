// Pruning I/O: PruneCheckpoint (dropping 2 of 12 layers) on a ~1.3 GB bf16
// checkpoint, like for like: without fsync (`--no-sync`) against `cp` of the
// same file, and durable (the default: every file fsynced before it is
// renamed into place) against `cp` + `sync`. docs/design.md, "How speed is judged": I/O work against cp. Also
// the whole `topiary prune` command (process start included) and its peak
// resident set as it reports it, next to the same command's on the tiny
// bundled model (the process baseline). All warm, best of --iters.
//
//   prune_bench [--dir DIR] [--iters N] [--topiary PATH]
//
// Prints one SUMMARY line.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <unistd.h>
#include <string>

#include "bench/bench_util.h"
#include "common/file_util.h"
#include "common/process.h"
#include "worker/compress/prune/plan.h"
#include "worker/model/checkpoint.h"

namespace {

using namespace topiary;

std::string SelfDir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string p(buf, n > 0 ? n : 0);
  return p.substr(0, p.rfind('/'));
}

}  // namespace

int main(int argc, char** argv) {
  TuneMalloc();
  bench::SetupThreads();
  std::string dir, topiary = SelfDir() + "/topiary";
  int iters = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--dir") dir = v;
    else if (k == "--iters") iters = std::stoi(v);
    else if (k == "--topiary") topiary = v;
  }
  if (dir.empty()) dir = *MakeTempDir("topiary-prune-bench");
  // ~520M parameters in bf16: 1.04 GB.
  model::ModelConfig c;
  c.family = model::Family::kLlama;
  c.hidden_size = 2048, c.intermediate_size = 5632, c.num_attention_heads = 16, c.num_key_value_heads = 4;
  c.num_hidden_layers = 12, c.vocab_size = 32000, c.head_dim = 128, c.max_position_embeddings = 4096;
  c.torch_dtype = "bfloat16";
  const std::string src = dir + "/source";
  {
    torch::NoGradGuard g;
    model::LlamaModel m = model::InitModel(c, 0, at::kBFloat16, 0.02);
    model::SaveOptions so;
    if (!model::SaveCheckpoint(m, src, so).ok()) return 1;
  }
  const double bytes = 2.0 * static_cast<double>(model::CountParams(c).total());
  auto config = model::LoadConfig(src);
  compress::PruneTarget target;
  target.drop_layers = {3, 7};
  auto plan = compress::MakePlan(*config, {}, target);
  if (!plan.ok()) return 1;
  double cp_s = 1e30, cp_sync_s = 1e30, prune_s = 1e30, prune_nosync_s = 1e30, cli_s = 1e30;
  model::SaveOptions nosync;
  nosync.durable = false;
  std::string cli_line;
  for (int i = 0; i < iters + 1; ++i) {  // the first round warms the page cache
    RemoveAll(dir + "/copy").IgnoreError();
    RemoveAll(dir + "/pruned").IgnoreError();
    ::sync();
    auto cp = bench::RunProcess({"cp", src + "/model.safetensors", dir + "/copy"});
    RemoveAll(dir + "/copy").IgnoreError();
    auto cp_sync = bench::RunProcess({"sh", "-c", "cp '" + src + "/model.safetensors' '" + dir + "/copy' && sync '" +
                                                      dir + "/copy'"});
    const double t = bench::TimeBest([&] {
      RemoveAll(dir + "/pruned").IgnoreError();
      if (!compress::PruneCheckpoint(src, *plan, dir + "/pruned", {}).ok()) std::abort();
    }, 0, 1);
    RemoveAll(dir + "/pruned").IgnoreError();
    ::sync();  // the durable run's write-back must not land in the next timing
    const double t_nosync = bench::TimeBest([&] {
      RemoveAll(dir + "/pruned").IgnoreError();
      if (!compress::PruneCheckpoint(src, *plan, dir + "/pruned", nosync).ok()) std::abort();
    }, 0, 1);
    RemoveAll(dir + "/pruned").IgnoreError();
    ::sync();
    auto cli = bench::RunProcess({topiary, "prune", "--model", src, "--drop-layers", "3,7", "--out", dir + "/pruned"});
    if (cp.exit_code != 0 || cp_sync.exit_code != 0 || cli.exit_code != 0) {
      std::fprintf(stderr, "prune_bench: cp exit %d, cp+sync exit %d, topiary prune exit %d\n", cp.exit_code,
                   cp_sync.exit_code, cli.exit_code);
      return 1;
    }
    if (i == 0) continue;
    cp_s = std::min(cp_s, cp.seconds), cp_sync_s = std::min(cp_sync_s, cp_sync.seconds);
    prune_s = std::min(prune_s, t), prune_nosync_s = std::min(prune_nosync_s, t_nosync), cli_s = std::min(cli_s, cli.seconds);
  }
  // The CLI reports its own peak RSS (VmHWM): the prune line ends "peak RSS N MB".
  RemoveAll(dir + "/pruned").IgnoreError();
  double rss_mb = 0, small_rss_mb = 0;
  auto peak_of = [&](const std::string& model) {
    std::string cmd = "'" + topiary + "' prune --model '" + model + "' --drop-layers 1 --out '" + dir + "/rss'";
    FILE* p = popen(cmd.c_str(), "r");
    char line[1024] = {0};
    double mb = 0;
    while (p != nullptr && std::fgets(line, sizeof(line), p) != nullptr) {
      const char* at = std::strstr(line, "peak RSS ");
      if (at != nullptr) mb = std::atof(at + 9);
    }
    if (p != nullptr) pclose(p);
    RemoveAll(dir + "/rss").IgnoreError();
    return mb;
  };
  rss_mb = peak_of(src);
  small_rss_mb = peak_of(std::string(TOPIARY_SOURCE_DIR) + "/models/kjv-llama-8m");
  std::printf("SUMMARY prune_bench source_gb=%.2f prune_nosync_s=%.2f cp_s=%.2f prune_nosync_over_cp=%.2f "
              "prune_s=%.2f cp_sync_s=%.2f prune_over_cp_sync=%.2f cli_s=%.2f peak_rss_mb=%.0f "
              "process_baseline_rss_mb=%.0f\n",
              bytes / 1e9, prune_nosync_s, cp_s, prune_nosync_s / cp_s, prune_s, cp_sync_s, prune_s / cp_sync_s,
              cli_s, rss_mb, small_rss_mb);
  RemoveAll(dir).IgnoreError();
  return 0;
}
