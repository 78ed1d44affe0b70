#include "client/train_commands.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/local_util.h"
#include "common/status_macros.h"
#include "common/units.h"
#include "worker/job/memory.h"
#include "worker/model/config.h"
#include "worker/stages/train_stage.h"
#include "worker/train/train_checkpoint.h"

namespace topiary::cli {
namespace {

struct TrainFlags {
  std::string dtype = "bf16", save_dtype = "bf16", tokens, peak_flops = "auto", memory_budget = "auto";
  stages::TrainStageOptions stage;
  stages::DistOptions dist;
  std::string hidden_pairs, hidden_loss = "cosine";
  int64_t lora_rank = 0;
  std::string lora_targets = "q,k,v,o,gate,up,down";
  int64_t checkpoint_every = 0;
  bool json = false;
  int threads = 0;
};

void PrintStep(const TrainFlags& f, const train::StepMetrics& s) {
  if (f.json) {
    std::printf("%s\n", stages::StepJson(s).c_str());
  } else {
    std::string parts;
    if (s.kl >= 0)
      parts = absl::StrFormat(" (kl %.4f ce %.4f%s)", s.kl, s.ce,
                              s.hidden >= 0 ? absl::StrFormat(" hidden %.4f", s.hidden) : "");
    std::printf("step %lld/%lld  loss %.4f%s  lr %.2e  gnorm %.2f  %.0f tok/s%s%s\n", static_cast<long long>(s.step),
                static_cast<long long>(s.steps), s.loss, parts.c_str(), s.lr, s.grad_norm, s.tokens_per_second,
                s.mfu >= 0 ? absl::StrFormat("  mfu %.2f", s.mfu).c_str() : "",
                s.eval_loss >= 0
                    ? absl::StrFormat("  eval_loss %.4f (ppl %.2f)", s.eval_loss, std::exp(s.eval_loss)).c_str()
                    : "");
  }
  std::fflush(stdout);
}

absl::StatusOr<std::vector<std::pair<int64_t, int64_t>>> ParsePairs(const std::string& text) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::vector<absl::string_view> st = absl::StrSplit(item, ':');
    int64_t s = 0, t = 0;
    if (st.size() != 2 || !absl::SimpleAtoi(st[0], &s) || !absl::SimpleAtoi(st[1], &t)) {
      return absl::InvalidArgumentError(absl::StrCat("--hidden-pairs: '", item, "' is not STUDENT:TEACHER"));
    }
    out.emplace_back(s, t);
  }
  return out;
}

// Refuses, before anything is loaded, a run whose estimated memory (teacher +
// student + gradients + optimizer shard + activations) exceeds what this
// machine has available, naming the estimate.
absl::Status CheckTrainingFits(const TrainFlags& f, stages::TrainMode mode) {
  const stages::TrainStageOptions& o = f.stage;
  ASSIGN_OR_RETURN(model::ModelConfig student, model::LoadConfig(o.model));
  std::optional<model::ModelConfig> teacher;
  if (mode == stages::TrainMode::kDistill && !o.teacher.empty()) {
    ASSIGN_OR_RETURN(teacher, model::LoadConfig(o.teacher));
  } else if (mode == stages::TrainMode::kStreamline) {
    teacher = student;
  }
  const job::MemoryEstimate need =
      job::TrainingMemory(student, teacher ? &*teacher : nullptr, o.dtype == at::kFloat ? "fp32" : "bf16",
                          f.dist.world_size, o.recipe.micro_batch, o.recipe.seq_len, o.use_lora);
  const char* what = mode == stages::TrainMode::kDistill ? "distillation" : "training";
  int64_t budget = -1;
  if (f.memory_budget == "auto")
    budget = job::AvailableMemory();
  else if (f.memory_budget != "off") {
    ASSIGN_OR_RETURN(budget, ParseBytes(f.memory_budget, "--memory-budget"));
  }
  return job::CheckFits(what, need, budget);
}

// Shared by train (cross-entropy), distill (KD from --teacher) and
// streamline (a replacement block); the flags fill the stage's options.
absl::Status RunTraining(TrainFlags f, stages::TrainMode mode) {
  stages::TrainStageOptions& o = f.stage;
  o.mode = mode;
  ASSIGN_OR_RETURN(o.dtype, stages::ParseDtype(f.dtype, "--dtype"));
  ASSIGN_OR_RETURN(o.save_dtype, stages::ParseDtype(f.save_dtype, "--save-dtype"));
  if (!f.tokens.empty()) {
    ASSIGN_OR_RETURN(o.tokens, ParseCount(f.tokens, "--tokens"));
  }
  ASSIGN_OR_RETURN(o.hidden.pairs, ParsePairs(f.hidden_pairs));
  if (f.hidden_loss == "cosine")
    o.hidden.loss = train::HiddenLoss::kCosine;
  else if (f.hidden_loss == "mse")
    o.hidden.loss = train::HiddenLoss::kMse;
  else
    return absl::InvalidArgumentError(absl::StrCat("--hidden-loss: '", f.hidden_loss, "' is not cosine or mse"));
  o.use_lora = f.lora_rank != 0;
  o.lora.rank = f.lora_rank;
  o.lora.targets = absl::StrSplit(f.lora_targets, ',', absl::SkipEmpty());
  ASSIGN_OR_RETURN(o.peak_flops, stages::ParsePeakFlops(f.peak_flops));
  o.checkpoint_every = f.checkpoint_every;
  o.checkpoint_dir = f.checkpoint_every > 0 || o.resume ? o.out + "/checkpoints" : "";
  if (o.resume) {  // (a worker resumes "if any"; a user asking for --resume means it)
    ASSIGN_OR_RETURN(std::optional<std::string> latest, train::LatestTrainCheckpoint(o.checkpoint_dir));
    if (!latest.has_value()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--resume: no checkpoint in ", o.checkpoint_dir, " (run without --resume to start at step 0)"));
    }
    std::fprintf(stderr, "resuming from %s\n", latest->c_str());
  }
  RETURN_IF_ERROR(CheckTrainingFits(f, mode));
  ASSIGN_OR_RETURN(stages::DistSession dist, stages::OpenDist(f.dist));
  stages::StageContext ctx = LocalContext(f.threads, &dist);
  ASSIGN_OR_RETURN(stages::TrainStageResult r,
                   stages::RunTraining(ctx, o, [&](const train::StepMetrics& s) { PrintStep(f, s); }));
  (void)r;
  return absl::OkStatus();
}

void AddRecipeFlags(CLI::App* cmd, TrainFlags* f) {
  auto& r = f->stage.recipe;
  AddDataFlags(cmd, &f->stage.data);
  cmd->add_option("--eval-data", f->stage.eval_data.path, "held-out token file (else --held-out of --data)");
  cmd->add_option("--held-out", f->stage.held_out, "fraction of --data held out for evaluation")->capture_default_str();
  cmd->add_option("--out", f->stage.out, "output directory (checkpoint, train_log.jsonl, checkpoints/)")->required();
  cmd->add_option("--seq-len", r.seq_len, "sequence length T")->capture_default_str();
  cmd->add_option("--steps", r.steps, "optimizer steps")->capture_default_str();
  cmd->add_option("--tokens", f->tokens, "token budget (sets --steps): e.g. 2M");
  cmd->add_option("--global-batch", r.global_batch, "sequences per step, all ranks")->capture_default_str();
  cmd->add_option("--micro-batch", r.micro_batch, "sequences per forward/backward")->capture_default_str();
  cmd->add_option("--lr", r.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr", r.min_lr, "final learning rate")->capture_default_str();
  cmd->add_option("--warmup", r.warmup_steps, "warm-up steps")->capture_default_str();
  cmd->add_option("--weight-decay", r.adamw.weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--beta1", r.adamw.beta1)->capture_default_str();
  cmd->add_option("--beta2", r.adamw.beta2)->capture_default_str();
  cmd->add_option("--clip", r.clip, "max gradient norm (0: off)")->capture_default_str();
  cmd->add_option("--seed", r.seed, "data order seed")->capture_default_str();
  cmd->add_option("--log-every", r.log_every)->capture_default_str();
  cmd->add_option("--eval-every", r.eval_every, "evaluate every N steps (0: at the end)")->capture_default_str();
  cmd->add_option("--eval-windows", r.eval_windows)->capture_default_str();
  cmd->add_option("--dtype", f->dtype, "compute dtype bf16|fp32")->capture_default_str();
  cmd->add_option("--save-dtype", f->save_dtype, "checkpoint dtype")->capture_default_str();
  cmd->add_option("--checkpoint-every", f->checkpoint_every, "training checkpoint every N steps (0: none)")
      ->capture_default_str();
  cmd->add_option("--keep-checkpoints", f->stage.keep_checkpoints, "training checkpoints kept")->capture_default_str();
  cmd->add_flag("--resume", f->stage.resume, "continue from the newest checkpoint in OUT/checkpoints");
  cmd->add_option("--train-last-blocks", f->stage.train_last_blocks,
                  "partial-layer tuning: train only the last K blocks, the final norm and lm_head (0: all)")
      ->capture_default_str();
  cmd->add_option("--peak-flops", f->peak_flops, "GEMM peak for MFU: auto (measured at start), 0 (off) or FLOP/s")
      ->capture_default_str();
  cmd->add_option("--memory-budget", f->memory_budget,
                  "refuse to start when the estimated memory exceeds this: auto (what this machine has "
                  "available), off, or a size (e.g. 20GB)")
      ->capture_default_str();
  cmd->add_option("--threads", f->threads, "CPU threads (0: all)");
  cmd->add_flag("--json", f->json, "print metrics as JSON lines");
  AddDistFlags(cmd, &f->dist);
}

void AddLoraFlags(CLI::App* cmd, TrainFlags* f) {
  cmd->add_option("--lora-rank", f->lora_rank, "LoRA rank r (0: train the weights themselves)")->capture_default_str();
  cmd->add_option("--lora-alpha", f->stage.lora.alpha, "LoRA alpha (scale alpha/r)")->capture_default_str();
  cmd->add_option("--lora-targets", f->lora_targets, "projections with adapters, comma-separated")
      ->capture_default_str();
}

}  // namespace

void RegisterTrainCommands(CLI::App& app, CommandRegistry& registry) {
  {
    auto f = std::make_shared<TrainFlags>();
    auto* cmd = app.add_subcommand("train", "train a causal LM with cross-entropy (also teacher correction)");
    cmd->add_option("--model", f->stage.model, "starting checkpoint")->required();
    AddRecipeFlags(cmd, f.get());
    AddLoraFlags(cmd, f.get());
    AddRunner(registry, cmd, f, "train",
              [](TrainFlags flags) { return RunTraining(std::move(flags), stages::TrainMode::kTrain); });
  }
  {
    auto f = std::make_shared<TrainFlags>();
    auto* cmd = app.add_subcommand("distill", "recover a pruned student by distillation from its teacher");
    cmd->add_option("--teacher", f->stage.teacher, "teacher checkpoint (forward only)")->required();
    cmd->add_option("--student", f->stage.model, "student checkpoint to train")->required();
    cmd->add_option("--temperature", f->stage.kd.temperature, "softmax temperature tau")->capture_default_str();
    cmd->add_flag("--t2-scale", f->stage.kd.scale_by_t2, "multiply the KL by tau^2");
    cmd->add_option("--ce-weight", f->stage.kd.ce_weight, "weight alpha of an added cross-entropy term")
        ->capture_default_str();
    cmd->add_option("--hidden-pairs", f->hidden_pairs,
                    "hidden-state loss between block outputs, STUDENT:TEACHER[,...] (e.g. 3:7)");
    cmd->add_option("--hidden-loss", f->hidden_loss, "cosine | mse")->capture_default_str();
    cmd->add_option("--hidden-weight", f->stage.hidden.weight, "weight of the hidden-state term")
        ->capture_default_str();
    AddRecipeFlags(cmd, f.get());
    AddLoraFlags(cmd, f.get());
    AddRunner(registry, cmd, f, "distill",
              [](TrainFlags flags) { return RunTraining(std::move(flags), stages::TrainMode::kDistill); });
  }
  {
    auto f = std::make_shared<TrainFlags>();
    auto* cmd = app.add_subcommand(
        "streamline", "remove N contiguous blocks and train one replacement block in their place (LLM-Streamline)");
    cmd->add_option("--model", f->stage.model, "the model to shorten (and the teacher of the replacement)")->required();
    cmd->add_option("--drop", f->stage.drop, "contiguous blocks removed (the result has N-1 fewer layers)")->required();
    cmd->add_option("--first", f->stage.first,
                    "first removed block (default: the window whose input and output agree most)");
    cmd->add_option("--calibration-batches", f->stage.calibration_batches, "micro batches to choose the window")
        ->capture_default_str();
    AddRecipeFlags(cmd, f.get());
    AddRunner(registry, cmd, f, "streamline",
              [](TrainFlags flags) { return RunTraining(std::move(flags), stages::TrainMode::kStreamline); });
  }
}

}  // namespace topiary::cli
