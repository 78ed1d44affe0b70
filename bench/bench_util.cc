#include "bench/bench_util.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "worker/model/checkpoint.h"

extern char** environ;

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

BenchArgs ParseBenchArgs(int argc, char** argv, BenchArgs a) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--shape")
      a.shape = v;
    else if (k == "--mode")
      a.mode = v;
    else if (k == "--dtype")
      a.dtype = v;
    else if (k == "--batch")
      a.batch = std::stoll(v);
    else if (k == "--seq")
      a.seq = std::stoll(v);
    else if (k == "--iters")
      a.iters = std::stoi(v);
  }
  return a;
}

model::ModelConfig BenchShape(const std::string& name) {
  model::ModelConfig c;
  c.family = model::Family::kLlama;
  if (name == "teacher") {
    c.hidden_size = 256, c.intermediate_size = 768, c.num_attention_heads = 8, c.num_key_value_heads = 4;
    c.num_hidden_layers = 8, c.vocab_size = 4096;
  } else {
    c.hidden_size = 1024, c.intermediate_size = 2816, c.num_attention_heads = 16, c.num_key_value_heads = 4;
    c.num_hidden_layers = 8, c.vocab_size = 8192;
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.max_position_embeddings = 4096;
  return c;
}

model::ModelConfig LlamaShape(const std::string& name) {
  model::ModelConfig c;
  c.family = model::Family::kLlama;
  c.vocab_size = 128256, c.num_key_value_heads = 8, c.head_dim = 128, c.rope_theta = 500000;
  c.max_position_embeddings = 131072, c.rms_norm_eps = 1e-5, c.torch_dtype = "bfloat16";
  if (name == "llama-3.1-8b") {
    c.hidden_size = 4096, c.intermediate_size = 14336, c.num_hidden_layers = 32, c.num_attention_heads = 32;
  } else {  // llama-3.2-1b
    c.hidden_size = 2048, c.intermediate_size = 8192, c.num_hidden_layers = 16, c.num_attention_heads = 32;
    c.head_dim = 64, c.tie_word_embeddings = true;
  }
  return c;
}

absl::Status WriteRandomCheckpoint(const model::ModelConfig& c, const std::string& dir, int64_t shard_bytes) {
  torch::NoGradGuard no_grad;
  const auto shapes = model::LlamaModel::ExpectedShapes(c);
  model::SaveOptions so;
  so.dtype = at::kBFloat16;
  so.max_shard_bytes = shard_bytes;
  so.durable = false;
  so.copy_files_from = std::string(TOPIARY_SOURCE_DIR) + "/models/kjv-llama-8m";
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  return model::SaveCheckpointStreaming(
      c,
      [&](size_t i) -> absl::StatusOr<model::ProducedTensor> {
        const auto& [name, shape] = shapes[i];
        if (name.find("norm") != std::string::npos) return at::ones(shape, at::kBFloat16);
        return at::normal(0.0, 0.02, shape, gen, at::TensorOptions().dtype(at::kFloat)).to(at::kBFloat16);
      },
      dir, so);
}

std::string BinDir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  const std::string p(buf, n > 0 ? static_cast<size_t>(n) : 0);
  return p.substr(0, p.rfind('/'));
}

std::vector<std::string> WeightFiles(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".safetensors") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

int64_t TotalBytes(const std::vector<std::string>& files) {
  int64_t n = 0;
  std::error_code ec;
  for (const auto& f : files) n += static_cast<int64_t>(std::filesystem::file_size(f, ec));
  return n;
}

int64_t DirectoryBytes(const std::string& dir) {
  int64_t n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) n += static_cast<int64_t>(e.file_size(ec));
  }
  return n;
}

void EvictFromPageCache(const std::vector<std::string>& files) {
  for (const auto& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::fdatasync(fd);  // dirty pages cannot be dropped
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

ProcessRun RunProcess(const std::vector<std::string>& args) {
  ProcessRun r;
  // Through peak_rss (see there): this process's own peak must not count.
  char result[] = "/tmp/topiary-bench-rss.XXXXXX";
  const int result_fd = ::mkstemp(result);
  if (result_fd < 0) return r;
  ::close(result_fd);
  const std::string probe = BinDir() + "/peak_rss";
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  std::vector<char*> argv = {const_cast<char*>(probe.c_str()), result};
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const auto start = std::chrono::steady_clock::now();
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, probe.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  int status = 0;
  if (rc == 0 && ::waitpid(pid, &status, 0) == pid) {
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (FILE* f = std::fopen(result, "r")) {
      long kb = 0;
      long long read = 0;
      if (std::fscanf(f, "%ld %lld", &kb, &read) == 2) r.max_rss_kb = kb, r.read_bytes = read;
      std::fclose(f);
    }
  }
  ::unlink(result);
  return r;
}

}  // namespace topiary::bench
