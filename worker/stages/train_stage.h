// Training stages (docs/design.md, "Recovery"): cross-entropy training
// (also teacher correction), knowledge distillation from a teacher, and
// LLM-Streamline's replacement block; LoRA or partial-layer tuning on top of
// the first two. Every rank trains its share of each global batch (ZeRO-1);
// rank 0 writes train_log.jsonl and the final checkpoint. With a checkpoint
// directory, training checkpoints are written there and `resume` continues
// from the newest. A stop request (context.stop) ends the run at a step
// boundary with CANCELLED. Blocking.
#pragma once

#include <ATen/core/ScalarType.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/config.h"
#include "worker/stages/context.h"
#include "worker/stages/data.h"
#include "worker/train/lora.h"
#include "worker/train/trainer.h"

namespace topiary::stages {

enum class TrainMode { kTrain, kDistill, kStreamline };

struct TrainStageOptions {
  TrainMode mode = TrainMode::kTrain;
  std::string model;    // the starting checkpoint (distill: the student; streamline: the model to shorten)
  std::string teacher;  // distill only
  DataOptions data;
  DataOptions eval_data;  // empty path: `held_out` of `data`
  double held_out = 0;
  at::ScalarType dtype = at::kBFloat16;       // compute
  at::ScalarType save_dtype = at::kBFloat16;  // the final checkpoint
  int64_t tokens = 0;                         // token budget: sets recipe.steps when > 0
  train::TrainRecipe recipe;
  train::KdOptions kd;               // distill
  double kl_weight = 1.0;            // distill: weight of the logit KL (0: cross-entropy only)
  train::HiddenStateOptions hidden;  // distill: hidden-state pairs (seed is the recipe's)
  train::LoraOptions lora;           // used when lora.rank > 0
  bool use_lora = false;
  int64_t drop = 0;                 // streamline: blocks removed
  int64_t first = -1;               // streamline: first removed block (-1: the best window)
  int64_t calibration_batches = 8;  // streamline: micro batches that choose the window
  int64_t train_last_blocks = 0;
  std::string out;             // final checkpoint and train_log.jsonl (rank 0)
  std::string log_path;        // where train_log.jsonl goes (empty: out/train_log.jsonl)
  std::string checkpoint_dir;  // training checkpoints (empty: none)
  int64_t checkpoint_every = 0;
  int keep_checkpoints = 2;
  bool resume = false;     // continue from the newest checkpoint in checkpoint_dir, if any
  double peak_flops = -1;  // for MFU: -1 measures it at start, 0 turns MFU off
  bool durable = true;     // fsync the final checkpoint
};

struct TrainStageResult {
  int64_t steps = 0;         // of the recipe
  int64_t resumed_from = 0;  // step the run started at (> 0 after a resume)
  int64_t tokens = 0;        // trained, all ranks, including before a resume
  double loss = -1;          // last step
  double eval_loss = -1;     // last evaluation (-1: none)
  double tokens_per_second = 0;
  double mfu = -1;
  double seconds = 0;
  int64_t first_replaced = -1;  // streamline: the window's first block
  int64_t lora_parameters = 0;
  model::ModelConfig config;  // of the trained model
};

// `on_log` gets, on rank 0, the steps the recipe's log_every selects (the CLI prints them).
absl::StatusOr<TrainStageResult> RunTraining(const StageContext& context, const TrainStageOptions& options,
                                             const train::StepCallback& on_log = nullptr);

// A logged step as one JSON object (no newline): a line of train_log.jsonl,
// and what `topiary distill --json` prints.
std::string StepJson(const train::StepMetrics& s);

// "auto": the GEMM peak of the compute dtype, measured now; "0": no MFU.
absl::StatusOr<double> ParsePeakFlops(const std::string& text);

}  // namespace topiary::stages
