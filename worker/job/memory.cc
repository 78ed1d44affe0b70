#include "worker/job/memory.h"

#include <algorithm>

#include "common/process.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace topiary::job {

int64_t DtypeBytes(const std::string& dtype) { return dtype == "fp32" || dtype == "float32" ? 4 : 2; }

namespace {

// Saved activations of one training micro batch per layer, in elements:
// norms, q/k/v, attention output, MLP gate/up/product, the block's input and
// output (~10 C + 4 FF per token), plus softmax probabilities (NH T per token).
double TrainActivationElements(const model::ModelConfig& c, int64_t B, int64_t T) {
  const double per_token =
      10.0 * c.hidden_size + 4.0 * c.intermediate_size + static_cast<double>(c.num_attention_heads) * T;
  return static_cast<double>(B) * T * (per_token * c.num_hidden_layers + 2.0 * c.vocab_size);
}

// A forward pass holds about one layer's working set plus the logits.
double ForwardActivationElements(const model::ModelConfig& c, int64_t B, int64_t T) {
  const double per_token = 6.0 * c.hidden_size + 3.0 * c.intermediate_size +
                           static_cast<double>(c.num_attention_heads) * T + 2.0 * c.vocab_size;
  return static_cast<double>(B) * T * per_token;
}

int64_t Params(const model::ModelConfig& c) { return model::CountParams(c).total(); }

// Weights of a model opened for forward passes (model::OpenCheckpoint): held
// in the narrower of the stored and compute dtypes; when stored narrower,
// one matrix (or one 8k-row slice of lm_head) is widened at a time.
int64_t ForwardWeightBytes(const model::ModelConfig& c, int64_t compute) {
  const int64_t stored = DtypeBytes(c.torch_dtype);
  int64_t bytes = model::CountParams(c).total() * std::min(stored, compute);
  if (stored < compute) {
    const int64_t widest = std::max<int64_t>(std::max<int64_t>(c.intermediate_size, c.num_attention_heads * c.head_dim),
                                             std::min<int64_t>(c.vocab_size, 8192));
    bytes += widest * c.hidden_size * compute;
  }
  return bytes;
}

}  // namespace

std::string FormatBytes(double bytes) {
  if (bytes >= 1e9) return absl::StrFormat("%.1f GB", bytes / 1e9);
  if (bytes >= 1e6) return absl::StrFormat("%.0f MB", bytes / 1e6);
  return absl::StrFormat("%.0f KB", bytes / 1e3);
}

std::string MemoryEstimate::Describe() const {
  std::string parts;
  auto add = [&](const char* name, int64_t v) {
    if (v > 0) absl::StrAppend(&parts, parts.empty() ? "" : " + ", name, " ", FormatBytes(static_cast<double>(v)));
  };
  add("teacher", teacher);
  add("model", student);
  add("gradients", gradients);
  add("optimizer shard", optimizer);
  add("activations", activations);
  return absl::StrCat(FormatBytes(static_cast<double>(total())), " (", parts, ")");
}

MemoryEstimate TrainingMemory(const model::ModelConfig& s, const model::ModelConfig* t, const std::string& dtype,
                              int world_size, int64_t micro_batch, int64_t seq_len, bool lora) {
  const int64_t b = DtypeBytes(dtype);
  MemoryEstimate m;
  m.student = Params(s) * b;
  const int64_t trained = lora ? Params(s) / 100 : Params(s);
  m.gradients = trained * b;
  m.optimizer = trained * 12 / std::max(1, world_size);  // fp32 master, m, v
  m.activations = static_cast<int64_t>(TrainActivationElements(s, micro_batch, seq_len) * b);
  if (t != nullptr) {
    m.teacher = Params(*t) * b;
    m.activations += static_cast<int64_t>(ForwardActivationElements(*t, micro_batch, seq_len) * b);
  }
  return m;
}

MemoryEstimate ForwardMemory(const model::ModelConfig& c, const model::ModelConfig* t, const std::string& dtype,
                             int64_t batch, int64_t seq_len) {
  const int64_t b = DtypeBytes(dtype);
  MemoryEstimate m;
  m.student = ForwardWeightBytes(c, b);
  m.activations = static_cast<int64_t>(ForwardActivationElements(c, batch, seq_len) * 4);  // fp32 statistics
  if (t != nullptr) {
    m.teacher = ForwardWeightBytes(*t, b);
    m.activations += static_cast<int64_t>(ForwardActivationElements(*t, batch, seq_len) * b);
  }
  return m;
}

int64_t AvailableMemory() { return AvailableMemoryBytes(); }

absl::Status CheckFits(const std::string& what, const MemoryEstimate& need, int64_t budget) {
  if (budget < 0 || need.total() <= budget) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(what, " needs an estimated ", need.Describe(), ", but only ",
                                                   FormatBytes(static_cast<double>(budget)),
                                                   " is available to this rank"));
}

}  // namespace topiary::job
