// Training loop for causal LMs (the recipe of docs/design.md, "The algorithms"): AdamW
// with fp32 master weights sharded across ranks (ShardedAdamW, ZeRO-1),
// linear warm-up then cosine decay, global gradient-norm clipping, gradient
// accumulation over micro batches, compute in the model's dtype, seeded and
// deterministic sampling, periodic evaluation, and exact resume from
// checkpoints. What is minimised is an Objective (objectives.h): cross-
// entropy (training, teacher correction), distillation from a teacher, LoRA
// (lora.h) or a replacement block (streamline.h).
//
// Data parallel: with a Communicator of W ranks, each optimizer step's global
// batch of sequences is dealt round-robin to the ranks; every rank holds the
// whole model, gradients are averaged by the optimizer. A W-rank run and a
// 1-rank run of the same recipe see the same sequences per step.
//
// Blocking; runs on the calling thread. Collective contract: every rank
// calls Train with the same recipe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/data/sampler.h"
#include "worker/data/token_file.h"
#include "worker/dist/communicator.h"
#include "worker/model/llama.h"
#include "worker/train/adamw.h"
#include "worker/train/losses.h"
#include "worker/train/objectives.h"

namespace topiary::train {

struct TrainRecipe {
  int64_t steps = 1000;       // optimizer steps
  int64_t global_batch = 32;  // sequences per optimizer step, all ranks together
  int64_t micro_batch = 8;    // sequences per forward/backward
  int64_t seq_len = 256;      // T
  double lr = 3e-4;           // peak
  double min_lr = 3e-5;
  int64_t warmup_steps = 100;
  double clip = 1.0;  // max global grad norm; 0 disables
  AdamWOptions adamw;
  uint64_t seed = 0;
  int64_t log_every = 10;
  int64_t eval_every = 0;  // 0: only at the end
  int64_t eval_windows = 32;
};

// Checks the recipe before any work; errors name the field. `world_size`
// ranks must divide the global batch into whole micro batches.
absl::Status ValidateRecipe(const TrainRecipe& recipe, int world_size = 1);

struct StepMetrics {
  int64_t step = 0;  // 1-based, after the update
  int64_t steps = 0;
  double loss = 0;     // mean objective over this step's tokens, all ranks
  double kl = -1;      // distillation: the KL term (-1 otherwise)
  double ce = 0;       // the student's cross-entropy on the targets
  double hidden = -1;  // distillation: the hidden-state term (-1 otherwise)
  double lr = 0;
  double grad_norm = 0;
  int64_t tokens = 0;                 // tokens processed so far, all ranks
  double tokens_per_second = 0;       // all ranks
  double mfu = -1;                    // achieved FLOP/s over RunOptions::peak_flops (when given)
  int64_t optimizer_state_bytes = 0;  // this rank's ZeRO-1 shard (falls as 1/ranks)
  double eval_loss = -1;              // set on evaluation steps
  int64_t resumed_from = 0;           // the step this run started from (> 0 after a resume)
  bool checkpointed = false;          // a training checkpoint was written after this step
};

using StepCallback = std::function<void(const StepMetrics&)>;

struct TrainData {
  const data::TokenFile* file = nullptr;
  data::TokenRange train_range;
  const data::TokenFile* eval_file = nullptr;  // null: `file`
  data::TokenRange eval_range;                 // empty: no evaluation
};

struct RunOptions {
  dist::Communicator* comm = nullptr;  // null: one rank
  // Checkpoints under checkpoint_dir/step-NNNNNNNN/ every checkpoint_every
  // steps (0: none) and at the end; the last keep_last are kept. With
  // resume, training continues from the newest complete checkpoint there.
  std::string checkpoint_dir;
  int64_t checkpoint_every = 0;
  int keep_last = 2;
  bool resume = false;
  double peak_flops = 0;  // for MFU; 0: not reported
  // Partial-layer fine-tuning (Reassessing Layer Pruning, arXiv:2411.15558):
  // when > 0, only the last `train_last_blocks` blocks, the final norm and
  // lm_head (the embedding when tied) are trained; the rest stays frozen.
  int64_t train_last_blocks = 0;
  // When not empty, only these blocks train (LLM-Streamline's replacement).
  std::vector<int64_t> train_blocks;
  // Stop requests, read at every step boundary (kStopCancel, kStopDrain).
  // With several ranks they agree through one small all-reduce per step, so
  // every rank stops after the same step, writes a checkpoint there (when
  // checkpoint_dir is set) and Train returns CANCELLED. When set, every rank
  // must set it (the all-reduce is collective).
  const std::atomic<int>* stop = nullptr;
  // Called after every step, whatever log_every says (progress reporting).
  std::function<void(const StepMetrics&)> every_step;
};

inline constexpr int kStopNone = 0;
inline constexpr int kStopCancel = 1;
inline constexpr int kStopDrain = 2;

// The model's parameter names trained under `options` (all when nothing
// restricts). Objectives that freeze the model train none of them.
std::vector<std::string> TrainableParameters(const model::LlamaModel& model, const RunOptions& options);

// Trains `model` in place. INVALID_ARGUMENT on a bad recipe or data;
// INTERNAL naming the step on a non-finite loss (the last checkpoint stays);
// the communicator's error when a peer fails.
absl::Status Train(model::LlamaModel& model, Objective& objective, const TrainData& data, const TrainRecipe& recipe,
                   const RunOptions& options, const StepCallback& callback);

// Cross-entropy training on one rank without checkpoints.
absl::Status TrainCausalLm(model::LlamaModel& model, const TrainData& data, const TrainRecipe& recipe,
                           const StepCallback& callback);

}  // namespace topiary::train
