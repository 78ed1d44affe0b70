// A job spec's stages as the stages' option structs: the one place where
// protos meet compute code (docs/design.md, "Stages"). Every default a spec
// may leave out is decided here and documented in the README's spec
// reference. Pure functions.
#pragma once

#include <ATen/core/ScalarType.h>

#include <string>

#include "absl/status/statusor.h"
#include "topiary/v1/job.pb.h"
#include "worker/compress/importance/estimate.h"
#include "worker/compress/prune/plan.h"
#include "worker/compress/search/search.h"
#include "worker/eval/perplexity.h"
#include "worker/stages/data.h"
#include "worker/stages/train_stage.h"

namespace topiary::job {

// "auto" | "u16" | "u32" | "text" | "jsonl" and the path; the tokenizer defaults to the model's.
stages::DataOptions DataOf(const v1::DataSource& source);

at::ScalarType DtypeOf(v1::Dtype dtype, at::ScalarType fallback);
std::string DtypeName(at::ScalarType dtype);  // "bfloat16" | "float16" | "float32" (config.json's names)
// A config.json torch_dtype ("bfloat16") as a ScalarType (bf16 when unknown).
at::ScalarType DtypeOfConfig(const std::string& torch_dtype);

compress::ImportanceOptions ImportanceOf(const v1::ImportanceStage& stage, const v1::DataSource& calibration);

compress::PruneTarget TargetOf(const v1::PruneTarget& target, bool redistribute_heads);

// The search space of a search stage; max_candidates is the number of probes.
compress::SearchSpace SearchSpaceOf(const v1::SearchSpec& search, int probes);

// Evaluation windows over data.eval: seq_len (default 256), at most
// `max_windows` (default data.eval.samples, else 64).
eval::EvalOptions EvalOf(const v1::DataSource& eval, int64_t max_windows);

// The recipe of a teacher_correction, distill or streamline stage on W
// ranks. Defaults: seq_len data.train.seq_len or 256; global_batch 16;
// micro_batch the largest divisor of global_batch/W up to 8; lr 1e-4 (2e-5
// for teacher correction); min_lr lr/10; warm-up 5% of the steps; weight
// decay 0.1; clip 1.0; checkpoint every 50 steps.
struct Recipe {
  train::TrainRecipe recipe;
  int64_t tokens = 0;
  at::ScalarType dtype = at::kBFloat16;
  int64_t checkpoint_every = 50;
  int64_t train_last_blocks = 0;
  bool use_lora = false;
  train::LoraOptions lora;
};
absl::StatusOr<Recipe> RecipeOf(const v1::TeacherCorrectionStage& stage, const v1::JobSpec& spec, int world_size);
absl::StatusOr<Recipe> RecipeOf(const v1::DistillStage& stage, const v1::JobSpec& spec, int world_size);
absl::StatusOr<Recipe> RecipeOf(const v1::StreamlineStage& stage, const v1::JobSpec& spec, int world_size);

// The distillation loss of a distill stage.
void LossOf(const v1::LossSpec& loss, stages::TrainStageOptions* options);

}  // namespace topiary::job
