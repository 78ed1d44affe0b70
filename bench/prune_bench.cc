// Pruning I/O, like for like against `cp`:
//  1. depth (dropping 2 of 12 layers of a ~1 GB bf16 checkpoint), in
//     process: without fsync against `cp` of the same file, and durable (every
//     file fsynced before it is renamed into place) against `cp` + `sync`;
//     and the whole `topiary prune` command (process start included).
//  2. width, the common Minitron case (hidden and MLP cut to ~3/4: rows and
//     columns of every matrix gathered), as a user runs it: `topiary prune
//     --scores ... --target ... --no-sync` in a fresh process, with the
//     source warm in the page cache and cold (evicted first), against `cp` of
//     the source warm and cold. Reported per byte written (prune reads the
//     whole source and writes ~3/5 of it; cp writes what it reads),
//     with the bytes each read from disk when cold (ru_inblock) and the bytes
//     written, and the command's peak resident set over the
//     largest tensor of the source (what streaming should bound it by);
//     and `cat` of the source from a cold cache, the read a width prune
//     does (it reads every run of kept rows with the dropped rows between
//     them, from the page cache or O_DIRECT when cold, into huge-page
//     buffers, and writes its output with O_DIRECT).
// Best of --iters after a warm-up round.
//
//   prune_bench [--shape bench|llama-3.2-1b|llama-3.1-8b] [--dir DIR] [--iters N]
//
// `bench` (the default) is the ~1 GB shape the depth figures have always
// used; llama-3.1-8b (16 GB, generated once into DIR/source and kept when
// --dir is given) is the full-size run. Prints one SUMMARY line.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "common/file_util.h"
#include "common/process.h"
#include "worker/compress/importance/scores_json.h"
#include "worker/compress/prune/plan.h"
#include "worker/model/checkpoint.h"

namespace {

using namespace topiary;

model::ModelConfig DepthShape() {  // ~520M parameters in bf16: 1.04 GB
  model::ModelConfig c;
  c.family = model::Family::kLlama;
  c.hidden_size = 2048, c.intermediate_size = 5632, c.num_attention_heads = 16, c.num_key_value_heads = 4;
  c.num_hidden_layers = 12, c.vocab_size = 32000, c.head_dim = 128, c.max_position_embeddings = 4096;
  c.torch_dtype = "bfloat16";
  return c;
}

// Random importance scores of the right shapes, as `topiary importance` writes them.
std::string RandomScores(const model::ModelConfig& c) {
  torch::NoGradGuard g;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(2);
  auto rand = [&](std::vector<int64_t> shape) { return at::rand(shape, gen, at::TensorOptions().dtype(at::kFloat)); };
  const int64_t L = c.num_hidden_layers;
  compress::ImportanceResult r;
  r.scores.heads = rand({L, c.num_attention_heads});
  r.scores.kv_groups = rand({L, c.num_key_value_heads});
  r.scores.neurons = rand({L, c.intermediate_size});
  r.scores.channels = rand({c.hidden_size});
  r.channels_per_norm = rand({2 * L + 1, c.hidden_size});
  r.scores.depth["block_influence"] = std::vector<double>(L, 1.0);
  return compress::ScoresToJson(c, r, {"source", "random", {}});
}

int64_t LargestTensorBytes(const model::ModelConfig& c) {
  int64_t most = 0;
  for (const auto& [name, shape] : model::LlamaModel::ExpectedShapes(c)) {
    int64_t n = 2;  // bf16
    for (int64_t d : shape) n *= d;
    most = std::max(most, n);
  }
  return most;
}

void Check(const bench::ProcessRun& r, const char* what) {
  if (r.exit_code != 0) std::fprintf(stderr, "prune_bench: %s exited %d\n", what, r.exit_code), std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  TuneMalloc();
  bench::SetupThreads();
  std::string dir, shape = "bench", topiary = bench::BinDir() + "/topiary";
  int iters = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--dir")
      dir = v;
    else if (k == "--iters")
      iters = std::stoi(v);
    else if (k == "--shape")
      shape = v;
  }
  const bool keep = !dir.empty();
  if (dir.empty()) dir = *MakeTempDir("topiary-prune-bench");
  const model::ModelConfig c = shape == "bench" ? DepthShape() : bench::LlamaShape(shape);
  const std::string src = dir + "/source";
  auto existing = model::LoadConfig(src);
  if (!existing.ok() || existing->hidden_size != c.hidden_size || existing->num_hidden_layers != c.num_hidden_layers ||
      existing->vocab_size != c.vocab_size) {
    RemoveAll(src).IgnoreError();
    if (absl::Status st = bench::WriteRandomCheckpoint(c, src); !st.ok()) {
      std::fprintf(stderr, "prune_bench: %s\n", std::string(st.message()).c_str());
      return 1;
    }
  }
  const std::vector<std::string> src_files = bench::WeightFiles(src);
  const double src_bytes = static_cast<double>(bench::TotalBytes(src_files));
  const std::string copy = dir + "/copy", out = dir + "/pruned";
  std::vector<std::string> cp = {"cp", "-r"};
  cp.insert(cp.end(), src_files.begin(), src_files.end());
  (void)MakeDirs(copy);
  cp.push_back(copy);

  // ---- 1. depth, in process and the command ---------------------------------
  compress::PruneTarget depth_target;
  depth_target.drop_layers = {3, 7};
  auto depth_plan = compress::MakePlan(c, {}, depth_target);
  if (!depth_plan.ok()) return 1;
  double cp_s = 1e30, cp_sync_s = 1e30, prune_s = 1e30, prune_nosync_s = 1e30, cli_s = 1e30;
  model::SaveOptions nosync;
  nosync.durable = false;
  const bool depth_case = shape == "bench";
  for (int i = 0; depth_case && i < iters + 1; ++i) {  // the first round warms the page cache
    RemoveAll(out).IgnoreError();
    RemoveAll(copy).IgnoreError();
    (void)MakeDirs(copy);
    ::sync();
    auto cp_run = bench::RunProcess(cp);
    std::vector<std::string> cp_and_sync = {
        "sh", "-c", absl::StrCat("cp '", src_files[0], "' '", copy, "/x' && sync '", copy, "/x'")};
    auto cp_sync_run = bench::RunProcess(cp_and_sync);
    Check(cp_run, "cp");
    Check(cp_sync_run, "cp + sync");
    const double t = bench::TimeBest(
        [&] {
          RemoveAll(out).IgnoreError();
          if (!compress::PruneCheckpoint(src, *depth_plan, out, {}).ok()) std::abort();
        },
        0, 1);
    RemoveAll(out).IgnoreError();
    ::sync();  // the durable run's write-back must not land in the next timing
    const double t_nosync = bench::TimeBest(
        [&] {
          RemoveAll(out).IgnoreError();
          if (!compress::PruneCheckpoint(src, *depth_plan, out, nosync).ok()) std::abort();
        },
        0, 1);
    RemoveAll(out).IgnoreError();
    ::sync();
    auto cli = bench::RunProcess({topiary, "prune", "--model", src, "--drop-layers", "3,7", "--out", out});
    Check(cli, "topiary prune (depth)");
    if (i == 0) continue;
    cp_s = std::min(cp_s, cp_run.seconds), cp_sync_s = std::min(cp_sync_s, cp_sync_run.seconds);
    prune_s = std::min(prune_s, t), prune_nosync_s = std::min(prune_nosync_s, t_nosync),
    cli_s = std::min(cli_s, cli.seconds);
  }

  // ---- 2. width, as a user runs it -----------------------------------------
  const std::string scores = dir + "/scores.json";
  if (!WriteFileAtomically(scores, RandomScores(c)).ok()) return 1;
  auto round_to = [](int64_t v, int64_t m) { return std::max<int64_t>(m, v / m * m); };
  const int64_t hidden = round_to(c.hidden_size * 3 / 4, 64), ffn = round_to(c.intermediate_size * 9 / 14, 256);
  const std::vector<std::string> width_cmd = {topiary,
                                              "prune",
                                              "--model",
                                              src,
                                              "--scores",
                                              scores,
                                              "--no-sync",
                                              "--out",
                                              out,
                                              "--target",
                                              absl::StrCat("hidden_size=", hidden, ",intermediate_size=", ffn)};
  // Reading the whole source cold, as `cat` of the files: the read a width
  // prune does.
  std::string cat_files = "cat";
  for (const std::string& f : src_files) absl::StrAppend(&cat_files, " '", f, "'");
  const std::vector<std::string> cat = {"sh", "-c", cat_files + " > /dev/null"};
  double width_warm = 1e30, width_cold = 1e30, cp_warm = 1e30, cp_cold = 1e30, cat_cold = 1e30, out_bytes = 0;
  int64_t width_rss_kb = 0, width_read_cold = 0, cp_read_cold = 0;
  for (int i = 0; i < iters + 1; ++i) {
    for (bool cold : {false, true}) {
      RemoveAll(copy).IgnoreError();
      (void)MakeDirs(copy);
      ::sync();  // earlier write-back out of the way
      if (cold) bench::EvictFromPageCache(src_files);
      auto c_run = bench::RunProcess(cp);
      Check(c_run, "cp");
      RemoveAll(out).IgnoreError();
      ::sync();
      if (cold) bench::EvictFromPageCache(src_files);
      auto w_run = bench::RunProcess(width_cmd);
      Check(w_run, "topiary prune (width)");
      out_bytes = static_cast<double>(bench::TotalBytes(bench::WeightFiles(out)));
      width_rss_kb = std::max(width_rss_kb, w_run.max_rss_kb);
      if (cold) {
        width_read_cold = w_run.read_bytes, cp_read_cold = c_run.read_bytes;  // the same every round
        bench::EvictFromPageCache(src_files);
        auto cat_run = bench::RunProcess(cat);
        Check(cat_run, "cat");
        if (i > 0) cat_cold = std::min(cat_cold, cat_run.seconds);
      }
      if (i == 0) continue;
      (cold ? cp_cold : cp_warm) = std::min(cold ? cp_cold : cp_warm, c_run.seconds);
      (cold ? width_cold : width_warm) = std::min(cold ? width_cold : width_warm, w_run.seconds);
    }
  }
  const double per_byte_warm = (width_warm / out_bytes) / (cp_warm / src_bytes);
  const double per_byte_cold = (width_cold / out_bytes) / (cp_cold / src_bytes);
  const double largest = static_cast<double>(LargestTensorBytes(c));
  std::printf("SUMMARY prune_bench shape=%s source_gb=%.2f", shape.c_str(), src_bytes / 1e9);
  if (depth_case) {
    std::printf(
        " depth_nosync_s=%.2f cp_s=%.2f depth_nosync_over_cp=%.2f depth_s=%.2f cp_sync_s=%.2f "
        "depth_over_cp_sync=%.2f depth_cli_s=%.2f",
        prune_nosync_s, cp_s, prune_nosync_s / cp_s, prune_s, cp_sync_s, prune_s / cp_sync_s, cli_s);
  }
  std::printf(
      " width_read_cold_gb=%.2f cp_read_cold_gb=%.2f width_written_gb=%.2f width_warm_s=%.2f cp_warm_s=%.2f "
      "width_over_cp_per_byte_warm=%.2f width_cold_s=%.2f cp_cold_s=%.2f width_over_cp_per_byte_cold=%.2f "
      "cat_cold_s=%.2f width_cold_over_cat_cold=%.2f width_peak_rss_gb=%.2f largest_tensor_gb=%.2f "
      "width_rss_over_largest_tensor=%.1f\n",
      static_cast<double>(width_read_cold) / 1e9, static_cast<double>(cp_read_cold) / 1e9, out_bytes / 1e9, width_warm,
      cp_warm, per_byte_warm, width_cold, cp_cold, per_byte_cold, cat_cold, width_cold / cat_cold,
      static_cast<double>(width_rss_kb) * 1024 / 1e9, largest / 1e9,
      static_cast<double>(width_rss_kb) * 1024 / largest);
  RemoveAll(out).IgnoreError();
  RemoveAll(copy).IgnoreError();
  if (!keep) RemoveAll(dir).IgnoreError();
  return 0;
}
