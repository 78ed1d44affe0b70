// Causal-LM training with cross-entropy (the recipe of shared/DESIGN.md §8):
// AdamW with fp32 master weights, linear warm-up then cosine decay, global
// gradient-norm clipping, gradient accumulation over micro batches, compute
// in the model's dtype (bf16 or fp32), seeded sampling. A callback receives
// each step's metrics. Blocking; runs on the calling thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "worker/data/sampler.h"
#include "worker/data/token_file.h"
#include "worker/model/llama.h"
#include "worker/train/adamw.h"

namespace topiary::train {

struct TrainRecipe {
  int64_t steps = 1000;         // optimizer steps
  int64_t global_batch = 32;    // sequences per optimizer step
  int64_t micro_batch = 8;      // sequences per forward/backward
  int64_t seq_len = 256;        // T
  double lr = 3e-4;             // peak
  double min_lr = 3e-5;
  int64_t warmup_steps = 100;
  double clip = 1.0;            // max global grad norm; 0 disables
  AdamWOptions adamw;
  uint64_t seed = 0;
  int64_t log_every = 10;
  int64_t eval_every = 0;       // 0: only at the end
  int64_t eval_windows = 32;
};

// Checks the recipe before any work; errors name the field.
absl::Status ValidateRecipe(const TrainRecipe& recipe);

struct StepMetrics {
  int64_t step = 0;         // 1-based, after the update
  int64_t steps = 0;
  double loss = 0;          // mean CE of this step's tokens
  double lr = 0;
  double grad_norm = 0;
  int64_t tokens = 0;       // tokens processed so far
  double tokens_per_second = 0;
  double eval_loss = -1;    // set on evaluation steps
};

using StepCallback = std::function<void(const StepMetrics&)>;

struct TrainData {
  const data::TokenFile* file = nullptr;
  data::TokenRange train_range;
  const data::TokenFile* eval_file = nullptr;  // null: `file`
  data::TokenRange eval_range;  // empty: no evaluation
};

// One micro batch: forward, mean cross-entropy over its tokens, and backward
// of loss * grad_scale (accumulating into .grad()). Returns the unscaled loss.
double ForwardBackwardCe(const model::LlamaModel& model, const data::Batch& batch, double grad_scale);

// Trains `model` in place. Fails with INVALID_ARGUMENT on a bad recipe or
// data, and with INTERNAL (naming the step) on a non-finite loss.
absl::Status TrainCausalLm(model::LlamaModel& model, const TrainData& data, const TrainRecipe& recipe,
                           const StepCallback& callback);

}  // namespace topiary::train
