#include "client/train_commands.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/local_util.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/units.h"
#include "worker/data/sampler.h"
#include "worker/model/checkpoint.h"
#include "worker/train/trainer.h"

namespace topiary::cli {
namespace {

using json = nlohmann::json;

struct TrainFlags {
  std::string model, teacher, out, dtype = "bf16", save_dtype = "bf16", tokens;
  DataFlags data, eval_data;
  DistFlags dist;
  double held_out = 0;
  train::TrainRecipe recipe;
  train::KdOptions kd;
  int64_t checkpoint_every = 0, train_last_blocks = 0;
  int keep_checkpoints = 2;
  bool resume = false, json = false;
  int threads = 0;
};

void PrintStep(const TrainFlags& f, const train::StepMetrics& s, std::ofstream* log) {
  json j = {{"step", s.step}, {"loss", s.loss}, {"lr", s.lr}, {"grad_norm", s.grad_norm},
            {"tokens", s.tokens}, {"tokens_per_second", s.tokens_per_second},
            {"optimizer_state_bytes", s.optimizer_state_bytes}};
  if (s.kl >= 0) j["kl"] = s.kl, j["ce"] = s.ce;
  if (s.eval_loss >= 0) j["eval_loss"] = s.eval_loss;
  if (log != nullptr) *log << j.dump() << "\n" << std::flush;
  if (f.json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("step %lld/%lld  loss %.4f%s  lr %.2e  gnorm %.2f  %.0f tok/s%s\n", static_cast<long long>(s.step),
                static_cast<long long>(s.steps), s.loss,
                s.kl >= 0 ? absl::StrFormat(" (kl %.4f ce %.4f)", s.kl, s.ce).c_str() : "", s.lr, s.grad_norm,
                s.tokens_per_second,
                s.eval_loss >= 0 ? absl::StrFormat("  eval_loss %.4f (ppl %.2f)", s.eval_loss, std::exp(s.eval_loss)).c_str()
                                 : "");
  }
  std::fflush(stdout);
}

// Shared by train (cross-entropy) and distill (KD from --teacher).
absl::Status RunTraining(TrainFlags f, bool distill) {
  SetThreads(f.threads);
  ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDtype(f.dtype, "--dtype"));
  ASSIGN_OR_RETURN(at::ScalarType save_dtype, ParseDtype(f.save_dtype, "--save-dtype"));
  train::TrainRecipe& r = f.recipe;
  if (!f.tokens.empty()) {  // a token budget sets the step count
    ASSIGN_OR_RETURN(int64_t tokens, ParseCount(f.tokens, "--tokens"));
    r.steps = std::max<int64_t>(1, tokens / (r.global_batch * r.seq_len));
  }
  RETURN_IF_ERROR(train::ValidateRecipe(r, f.dist.world_size));
  if (distill && !(f.kd.temperature > 0)) return absl::InvalidArgumentError("--temperature: must be positive");
  if (distill && f.kd.ce_weight < 0) return absl::InvalidArgumentError("--ce-weight: must be non-negative");
  ASSIGN_OR_RETURN(model::LlamaModel m, model::LoadCheckpoint(f.model, dtype));
  std::unique_ptr<model::LlamaModel> teacher;
  if (distill) {
    ASSIGN_OR_RETURN(model::LlamaModel t, model::LoadCheckpoint(f.teacher, dtype));
    if (t.config.vocab_size != m.config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("--teacher: vocabulary ", t.config.vocab_size,
                                                     " differs from the student's ", m.config.vocab_size));
    }
    teacher = std::make_unique<model::LlamaModel>(std::move(t));
  }
  ASSIGN_OR_RETURN(auto file, OpenData(f.data, f.model, m.config.vocab_size));
  train::TrainData td;
  td.file = file.get();
  std::unique_ptr<data::TokenFile> eval_file;
  if (!f.eval_data.path.empty()) {
    f.eval_data.tokenizer = f.data.tokenizer;
    ASSIGN_OR_RETURN(eval_file, OpenData(f.eval_data, f.model, m.config.vocab_size));
    td.train_range = {0, file->size()};
    td.eval_file = eval_file.get();
    td.eval_range = {0, eval_file->size()};
  } else {
    ASSIGN_OR_RETURN(auto split, data::SplitHeldOut(file->size(), f.held_out));
    td.train_range = split.first;
    td.eval_range = split.second;
  }
  ASSIGN_OR_RETURN(DistSession dist, OpenDist(f.dist));
  const bool leader = dist.comm->rank() == 0;
  RETURN_IF_ERROR(MakeDirs(f.out));
  std::ofstream log;
  if (leader) log.open(f.out + "/train_log.jsonl", f.resume ? std::ios::app : std::ios::trunc);
  train::RunOptions ro;
  ro.comm = dist.comm.get();
  ro.checkpoint_dir = f.checkpoint_every > 0 || f.resume ? f.out + "/checkpoints" : "";
  ro.checkpoint_every = f.checkpoint_every;
  ro.keep_last = f.keep_checkpoints;
  ro.resume = f.resume;
  ro.train_last_blocks = f.train_last_blocks;
  train::CrossEntropyObjective ce;
  std::unique_ptr<train::DistillationObjective> kd;
  if (distill) kd = std::make_unique<train::DistillationObjective>(teacher.get(), f.kd);
  train::Objective& objective = distill ? static_cast<train::Objective&>(*kd) : ce;
  RETURN_IF_ERROR(train::Train(m, objective, td, r, ro, [&](const train::StepMetrics& s) {
    if (leader) PrintStep(f, s, &log);
  }));
  if (!leader) return absl::OkStatus();
  model::SaveOptions so;
  so.dtype = save_dtype;
  so.copy_files_from = f.model;
  return model::SaveCheckpoint(m, f.out, so);
}

void AddRecipeFlags(CLI::App* cmd, TrainFlags* f) {
  auto& r = f->recipe;
  AddDataFlags(cmd, &f->data);
  cmd->add_option("--eval-data", f->eval_data.path, "held-out token file (else --held-out of --data)");
  cmd->add_option("--held-out", f->held_out, "fraction of --data held out for evaluation")->capture_default_str();
  cmd->add_option("--out", f->out, "output directory (checkpoint, train_log.jsonl, checkpoints/)")->required();
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
  cmd->add_option("--keep-checkpoints", f->keep_checkpoints, "training checkpoints kept")->capture_default_str();
  cmd->add_flag("--resume", f->resume, "continue from the newest checkpoint in OUT/checkpoints");
  cmd->add_option("--train-last-blocks", f->train_last_blocks,
                  "partial-layer tuning: train only the last K blocks, the final norm and lm_head (0: all)")
      ->capture_default_str();
  cmd->add_option("--threads", f->threads, "CPU threads (0: all)");
  cmd->add_flag("--json", f->json, "print metrics as JSON lines");
  AddDistFlags(cmd, &f->dist);
}

}  // namespace

void RegisterTrainCommands(CLI::App& app, CommandRegistry& registry) {
  {
    auto f = std::make_shared<TrainFlags>();
    auto* cmd = app.add_subcommand("train", "train a causal LM with cross-entropy (also teacher correction)");
    cmd->add_option("--model", f->model, "starting checkpoint")->required();
    AddRecipeFlags(cmd, f.get());
    AddRunner(registry, cmd, f, "train", [](TrainFlags flags) { return RunTraining(std::move(flags), false); });
  }
  {
    auto f = std::make_shared<TrainFlags>();
    auto* cmd = app.add_subcommand("distill", "recover a pruned student by distillation from its teacher");
    cmd->add_option("--teacher", f->teacher, "teacher checkpoint (forward only)")->required();
    cmd->add_option("--student", f->model, "student checkpoint to train")->required();
    cmd->add_option("--temperature", f->kd.temperature, "softmax temperature tau")->capture_default_str();
    cmd->add_flag("--t2-scale", f->kd.scale_by_t2, "multiply the KL by tau^2");
    cmd->add_option("--ce-weight", f->kd.ce_weight, "weight alpha of an added cross-entropy term")
        ->capture_default_str();
    AddRecipeFlags(cmd, f.get());
    AddRunner(registry, cmd, f, "distill", [](TrainFlags flags) { return RunTraining(std::move(flags), true); });
  }
}

}  // namespace topiary::cli
