// Forward and training-step throughput of the Llama implementation, against
// the bf16 GEMM peak measured in the same run and against the eager-PyTorch
// peer (bench/peers/llama_step.py) run on the same shape right after.
//
//   model_bench [--shape 100m|teacher] [--mode train|forward|kd|fwdbwd|optim] [--batch B] [--seq T] [--iters N]
//
// kd: a distillation step, the given shape as teacher (forward, no autograd)
// and a student with 3/4 of its layers and 8/11 of its MLP width.
//
// FLOPs per token (docs/design.md, "How speed is judged"): forward 2N + 4·L·T·C with N the
// parameters that multiply (all but the embedding lookup); training 3x; KD
// step: teacher forward + student training. kd also times saving and loading
// the student's training checkpoint (model + ZeRO-1 optimizer state).
// Prints one SUMMARY line.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <sys/resource.h>
#include <filesystem>
#include <memory>
#include <string>

#include <torch/csrc/autograd/profiler_legacy.h>

#include "absl/strings/str_format.h"

#include "bench/bench_util.h"
#include "worker/train/peak.h"
#include "common/process.h"
#include "worker/model/caching_allocator.h"
#include "worker/model/llama.h"
#include "worker/train/sharded_adamw.h"
#include "worker/train/train_checkpoint.h"
#include "worker/train/trainer.h"

namespace {

using namespace topiary;

// The student of --mode kd: the teacher shape with 3/4 of its layers and
// a narrower MLP (depth and width pruned), hidden size kept.
model::ModelConfig StudentOf(const model::ModelConfig& teacher) {
  model::ModelConfig s = teacher;
  s.num_hidden_layers = teacher.num_hidden_layers * 3 / 4;
  s.intermediate_size = teacher.intermediate_size / 11 * 8 / 64 * 64;
  return s;
}

// One run of the peer: its throughput and the torch version it ran on.
struct Peer {
  double tokens_per_s = -1;
  std::string torch = "none";
};

// Runs the peer (eager PyTorch, or torch.compile with `compiled`) in a fresh
// process with the same shape (kd: the teacher shape; the peer derives the
// same student) and the same allocator settings, on the Python environment
// of the torch wheel we link.
Peer RunPeer(const bench::BenchArgs& a, const model::ModelConfig& c, bool compiled) {
  std::string cmd =
      std::string(
          "MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=67108864 " TOPIARY_PYTHON
          " ") +
      TOPIARY_SOURCE_DIR + "/bench/peers/llama_step.py" + " --hidden " + std::to_string(c.hidden_size) + " --ffn " +
      std::to_string(c.intermediate_size) + " --heads " + std::to_string(c.num_attention_heads) + " --kv-heads " +
      std::to_string(c.num_key_value_heads) + " --layers " + std::to_string(c.num_hidden_layers) + " --vocab " +
      std::to_string(c.vocab_size) + " --seq " + std::to_string(a.seq) + " --batch " + std::to_string(a.batch) +
      " --iters " + std::to_string(a.iters) + " --mode " + a.mode + " --threads " +
      std::to_string(at::get_num_threads()) + " --student-layers " + std::to_string(StudentOf(c).num_hidden_layers) +
      " --student-ffn " + std::to_string(StudentOf(c).intermediate_size) + (compiled ? " --compile" : "");
  Peer peer;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return peer;
  char line[512];
  while (fgets(line, sizeof(line), p)) {
    if (const char* s = std::strstr(line, "tokens_per_second=")) peer.tokens_per_s = std::atof(s + 18);
    if (const char* s = std::strstr(line, "torch=")) peer.torch = std::string(s + 6, std::strcspn(s + 6, " \n"));
  }
  pclose(p);
  return peer;
}

}  // namespace

int main(int argc, char** argv) {
  TuneMalloc();
  model::InstallCachingCpuAllocator();
  bench::SetupThreads();
  bench::BenchArgs a = bench::ParseBenchArgs(argc, argv, {"100m", "train", "bf16", 4, 512, 5});
  const model::ModelConfig teacher_config = bench::BenchShape(a.shape);
  const bool kd = a.mode == "kd";
  model::ModelConfig c = kd ? StudentOf(teacher_config) : teacher_config;
  const double peak = train::MeasureGemmPeak(torch::kBFloat16);
  model::LlamaModel m = model::InitModel(c, 0, at::kBFloat16);
  model::LlamaModel teacher = kd ? model::InitModel(teacher_config, 1, at::kBFloat16) : model::LlamaModel();
  std::unique_ptr<train::DistillationObjective> kd_objective;
  if (kd) kd_objective = std::move(*train::DistillationObjective::Create(&teacher, m, {}));
  data::Batch batch{at::randint(0, c.vocab_size, {a.batch, a.seq}, at::kLong),
                    at::randint(0, c.vocab_size, {a.batch, a.seq}, at::kLong)};
  const bool train = a.mode != "forward";
  std::vector<at::Tensor*> params;
  auto named = m.NamedParameters();
  for (auto& [n, t] : named) {
    if (train) t->requires_grad_(true);
    params.push_back(t);
  }
  // The optimizer `topiary train` runs: ZeRO-1 AdamW, here over one rank.
  auto comm = dist::MakeLocalCommunicator();
  auto opt = std::move(*train::ShardedAdamW::Create(named, {}, comm.get()));
  auto opt_step = [&] {
    if (!opt->Step(1e-4, 1.0).ok()) std::abort();
  };
  auto step = [&] {
    if (!train) {
      torch::NoGradGuard g;
      model::Forward(m, batch.inputs);
      return;
    }
    for (at::Tensor* p : params) p->mutable_grad() = at::Tensor();
    if (kd) {
      kd_objective->ForwardBackward(m, batch, 1.0);
    } else {
      train::ForwardBackwardCe(m, batch, 1.0);
    }
    if (a.mode == "fwdbwd") return;  // without the optimizer, for analysis
    opt_step();
  };
  if (a.mode == "optim") {  // the optimizer step alone, for analysis
    train::ForwardBackwardCe(m, batch, 1.0);
    double t = bench::TimeBest(opt_step, 1, a.iters);
    std::printf("SUMMARY model_bench optimizer_step_s=%.3f params=%.1fM\n", t, model::CountParams(c).total() / 1e6);
    return 0;
  }
  if (const char* trace = std::getenv("TOPIARY_BENCH_PROFILE")) {  // a Chrome trace of one step, for analysis
    for (int i = 0; i < 3; ++i) step();
    torch::autograd::profiler::RecordProfile guard(trace);
    step();
  }
  struct rusage ru0 {
  }, ru1{};
  getrusage(RUSAGE_SELF, &ru0);
  double sec = bench::TimeBest(step, 1, a.iters);
  getrusage(RUSAGE_SELF, &ru1);
  const double faults_per_step = static_cast<double>(ru1.ru_minflt - ru0.ru_minflt) / (a.iters + 1);
  const model::CpuCacheStats cache = model::GetCpuCacheStats();
  const double tokens = static_cast<double>(a.batch * a.seq);
  auto counts = model::CountParams(c);
  double n_mul =
      static_cast<double>(counts.total() - counts.embedding + (c.tie_word_embeddings ? counts.embedding : 0));
  double fwd_flops = 2 * n_mul + 4.0 * c.num_hidden_layers * a.seq * c.hidden_size;
  double flops =
      ((train ? 3 : 1) * fwd_flops + (kd ? train::ForwardFlopsPerToken(teacher_config, a.seq) : 0)) * tokens / sec;
  std::string checkpoint;  // KD: a training checkpoint of the student (model + optimizer) saved and loaded
  if (kd) {
    for (auto& [n, t] : named) t->mutable_grad() = at::Tensor();
    train::ShardedAdamW* sharded = opt.get();
    const std::string dir = "/tmp/topiary-model-bench-ckpt";
    std::filesystem::remove_all(dir);
    train::TrainState st;
    st.step = 1;
    double save = bench::TimeBest(
        [&] {
          absl::Status s = train::WriteTrainCheckpoint(dir, st, m, *sharded, *comm, 1);
          if (!s.ok()) std::fprintf(stderr, "checkpoint: %s\n", s.ToString().c_str()), std::exit(1);
        },
        0, 1);
    double load = bench::TimeBest(
        [&] {
          auto s = train::LoadTrainCheckpoint(dir + "/step-00000001", m, *sharded, *comm, 0);
          if (!s.ok()) std::fprintf(stderr, "checkpoint: %s\n", s.status().ToString().c_str()), std::exit(1);
        },
        0, 1);
    uint64_t bytes = 0;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir)) {
      if (e.is_regular_file()) bytes += e.file_size();
    }
    std::filesystem::remove_all(dir);
    checkpoint = absl::StrFormat(" ckpt_mb=%.0f ckpt_save_s=%.2f ckpt_load_s=%.2f", bytes / 1e6, save, load);
  }
  const bool peers = a.mode != "fwdbwd" && !std::getenv("TOPIARY_BENCH_NO_PEER");
  const Peer eager = peers ? RunPeer(a, kd ? teacher_config : c, false) : Peer{};
  const Peer compiled =
      peers && !std::getenv("TOPIARY_BENCH_NO_COMPILE") ? RunPeer(a, kd ? teacher_config : c, true) : Peer{};
  auto ratio = [&](const Peer& p) { return p.tokens_per_s > 0 ? (tokens / sec) / p.tokens_per_s : 0.0; };
  std::printf(
      "SUMMARY model_bench shape=%s params=%.1fM mode=%s batch=%lld seq=%lld tokens_per_s=%.0f "
      "gflops=%.1f bf16_peak_gflops=%.1f of_peak=%.3f libtorch=%s peer_torch=%s eager_tokens_per_s=%.0f "
      "vs_eager=%.2f compiled_tokens_per_s=%.0f vs_compiled=%.2f page_faults_per_step=%.0f "
      "peak_buffers_mb=%.0f mapped_buffers_mb=%.0f%s\n",
      a.shape.c_str(), counts.total() / 1e6, a.mode.c_str(), static_cast<long long>(a.batch),
      static_cast<long long>(a.seq), tokens / sec, flops / 1e9, peak / 1e9, flops / peak, TORCH_VERSION,
      eager.torch.c_str(), eager.tokens_per_s, ratio(eager), compiled.tokens_per_s, ratio(compiled), faults_per_step,
      cache.peak_in_use_bytes / 1e6, (cache.in_use_bytes + cache.cached_bytes) / 1e6, checkpoint.c_str());
  return 0;
}
