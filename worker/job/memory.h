// Memory a stage's rank will need, stated before it loads anything, and the
// memory this process may use (docs/design.md, "Memory"). The estimates
// count weights in the dtype they are held in, gradients, this rank's ZeRO-1
// optimizer shard (fp32 master weights and two moments) and activations of
// one micro batch; they are estimates (within ~20% of the measured peak on
// the bundled model), used to refuse a run that cannot fit instead of being
// killed by the kernel. Torch-free; pure functions except AvailableMemory.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "worker/model/config.h"

namespace topiary::job {

struct MemoryEstimate {
  int64_t teacher = 0;  // weights of a forward-only teacher
  int64_t student = 0;  // weights of the model being trained or evaluated
  int64_t gradients = 0;
  int64_t optimizer = 0;    // this rank's shard
  int64_t activations = 0;  // one micro batch
  int64_t total() const { return teacher + student + gradients + optimizer + activations; }
  std::string Describe() const;  // "12.3 GB (teacher 4.1 GB + student ...)"
};

int64_t DtypeBytes(const std::string& dtype);  // "bf16", "fp16" -> 2, "fp32" -> 4

// Training (with `teacher` null: cross-entropy; LoRA trains almost nothing,
// so `lora` drops gradients and optimizer state to the adapters' size).
MemoryEstimate TrainingMemory(const model::ModelConfig& student, const model::ModelConfig* teacher,
                              const std::string& dtype, int world_size, int64_t micro_batch, int64_t seq_len,
                              bool lora);
// A forward pass with statistics (importance) or evaluation in `dtype`,
// optionally beside a teacher (agreement). Weights count as
// model::OpenCheckpoint holds them: in place when stored in `dtype`, widened
// one matrix at a time when stored narrower (config.torch_dtype).
MemoryEstimate ForwardMemory(const model::ModelConfig& model, const model::ModelConfig* teacher,
                             const std::string& dtype, int64_t batch, int64_t seq_len);

// What this process may still allocate: MemAvailable, capped by the cgroup's
// memory.max minus its current usage when one is set.
int64_t AvailableMemory();

// RESOURCE_EXHAUSTED "<what> needs <estimate>, but only <budget> is available" when it does not fit.
absl::Status CheckFits(const std::string& what, const MemoryEstimate& need, int64_t budget);

std::string FormatBytes(double bytes);

}  // namespace topiary::job
