#include "client/train_commands.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/local_util.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/units.h"
#include "worker/data/sampler.h"
#include "worker/model/checkpoint.h"
#include "worker/train/lora.h"
#include "worker/train/peak.h"
#include "worker/train/streamline.h"
#include "worker/train/trainer.h"

namespace topiary::cli {
namespace {

using json = nlohmann::json;

enum class Mode { kTrain, kDistill, kStreamline };

struct TrainFlags {
  std::string model, teacher, out, dtype = "bf16", save_dtype = "bf16", tokens, peak_flops = "auto";
  DataFlags data, eval_data;
  DistFlags dist;
  double held_out = 0;
  train::TrainRecipe recipe;
  train::KdOptions kd;
  std::string hidden_pairs, hidden_loss = "cosine";
  double hidden_weight = 1.0;
  int64_t lora_rank = 0;
  double lora_alpha = 16;
  std::string lora_targets = "q,k,v,o,gate,up,down";
  int64_t drop = 0, first = -1, calibration_batches = 8;
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
  if (s.hidden >= 0) j["hidden"] = s.hidden;
  if (s.mfu >= 0) j["mfu"] = s.mfu;
  if (s.eval_loss >= 0) j["eval_loss"] = s.eval_loss;
  if (log != nullptr) *log << j.dump() << "\n" << std::flush;
  if (f.json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::string parts;
    if (s.kl >= 0) parts = absl::StrFormat(" (kl %.4f ce %.4f%s)", s.kl, s.ce,
                                           s.hidden >= 0 ? absl::StrFormat(" hidden %.4f", s.hidden) : "");
    std::printf("step %lld/%lld  loss %.4f%s  lr %.2e  gnorm %.2f  %.0f tok/s%s%s\n", static_cast<long long>(s.step),
                static_cast<long long>(s.steps), s.loss, parts.c_str(), s.lr, s.grad_norm, s.tokens_per_second,
                s.mfu >= 0 ? absl::StrFormat("  mfu %.2f", s.mfu).c_str() : "",
                s.eval_loss >= 0 ? absl::StrFormat("  eval_loss %.4f (ppl %.2f)", s.eval_loss, std::exp(s.eval_loss)).c_str()
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

// "auto": the GEMM peak of the compute dtype, measured now; "0": no MFU.
absl::StatusOr<double> ResolvePeak(const std::string& text, at::ScalarType dtype) {
  if (text == "auto") return train::MeasureGemmPeak(dtype);
  double v = 0;
  if (!absl::SimpleAtod(text, &v) || v < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--peak-flops: '", text, "' is not auto or a FLOP/s figure"));
  }
  return v;
}

// Shared by train (cross-entropy), distill (KD from --teacher) and
// streamline (a replacement block); LoRA wraps the first two.
absl::Status RunTraining(TrainFlags f, Mode mode) {
  SetThreads(f.threads);
  ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDtype(f.dtype, "--dtype"));
  ASSIGN_OR_RETURN(at::ScalarType save_dtype, ParseDtype(f.save_dtype, "--save-dtype"));
  train::TrainRecipe& r = f.recipe;
  if (!f.tokens.empty()) {  // a token budget sets the step count
    ASSIGN_OR_RETURN(int64_t tokens, ParseCount(f.tokens, "--tokens"));
    r.steps = std::max<int64_t>(1, tokens / (r.global_batch * r.seq_len));
  }
  RETURN_IF_ERROR(train::ValidateRecipe(r, f.dist.world_size));
  if (mode == Mode::kDistill && !(f.kd.temperature > 0)) {
    return absl::InvalidArgumentError("--temperature: must be positive");
  }
  if (mode == Mode::kDistill && f.kd.ce_weight < 0) return absl::InvalidArgumentError("--ce-weight: must be non-negative");
  if (!(f.hidden_weight > 0)) return absl::InvalidArgumentError("--hidden-weight: must be positive");
  if (f.lora_rank < 0) return absl::InvalidArgumentError("--lora-rank: must be positive (0: no LoRA)");
  if (f.lora_rank > 0 && f.train_last_blocks > 0) {
    return absl::InvalidArgumentError("--lora-rank: cannot be combined with --train-last-blocks");
  }
  train::HiddenStateOptions hidden;
  ASSIGN_OR_RETURN(hidden.pairs, ParsePairs(f.hidden_pairs));
  if (f.hidden_loss == "cosine") hidden.loss = train::HiddenLoss::kCosine;
  else if (f.hidden_loss == "mse") hidden.loss = train::HiddenLoss::kMse;
  else return absl::InvalidArgumentError(absl::StrCat("--hidden-loss: '", f.hidden_loss, "' is not cosine or mse"));
  hidden.weight = f.hidden_weight;
  hidden.seed = r.seed;
  ASSIGN_OR_RETURN(double peak, ResolvePeak(f.peak_flops, dtype));
  ASSIGN_OR_RETURN(model::LlamaModel m, model::LoadCheckpoint(f.model, dtype));
  std::unique_ptr<model::LlamaModel> teacher;
  if (mode == Mode::kDistill) {
    ASSIGN_OR_RETURN(model::LlamaModel t, model::LoadCheckpoint(f.teacher, dtype));
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
  train::RunOptions ro;
  ro.comm = dist.comm.get();
  ro.checkpoint_dir = f.checkpoint_every > 0 || f.resume ? f.out + "/checkpoints" : "";
  ro.checkpoint_every = f.checkpoint_every;
  ro.keep_last = f.keep_checkpoints;
  ro.resume = f.resume;
  ro.train_last_blocks = f.train_last_blocks;
  ro.peak_flops = peak;

  std::unique_ptr<train::Objective> objective;
  if (mode == Mode::kStreamline) {  // the original becomes the teacher of its replacement block
    teacher = std::make_unique<model::LlamaModel>(m);
    if (f.first < 0) {
      ASSIGN_OR_RETURN(data::SequenceSampler sampler,
                       data::SequenceSampler::Create(file.get(), td.train_range, r.seq_len, r.seed + 1));
      std::vector<data::Batch> calibration;
      for (int64_t b = 0; b < f.calibration_batches; ++b) {
        std::vector<int64_t> idx;
        for (int64_t i = 0; i < r.micro_batch; ++i) idx.push_back(b * r.micro_batch + i);
        ASSIGN_OR_RETURN(data::Batch batch, sampler.Sequences(idx));
        calibration.push_back(std::move(batch));
      }
      ASSIGN_OR_RETURN(f.first, train::BestReplacementWindow(m, calibration, f.drop));
    }
    ASSIGN_OR_RETURN(m, train::ReplaceWindow(*teacher, f.first, f.drop));
    if (leader) {
      std::printf("replacing blocks %lld..%lld with one block trained on their input and output\n",
                  static_cast<long long>(f.first), static_cast<long long>(f.first + f.drop - 1));
    }
    ro.train_blocks = {f.first};
    objective = std::make_unique<train::ReplacementObjective>(teacher.get(), f.first, f.drop);
  } else if (mode == Mode::kDistill) {
    ASSIGN_OR_RETURN(objective, train::DistillationObjective::Create(teacher.get(), m, f.kd, hidden));
  } else {
    if (!hidden.pairs.empty()) return absl::InvalidArgumentError("--hidden-pairs: only for distill");
    objective = std::make_unique<train::CrossEntropyObjective>();
  }
  std::unique_ptr<train::LoraAdapter> lora;
  std::unique_ptr<train::LoraObjective> lora_objective;
  if (f.lora_rank > 0) {
    train::LoraOptions lo;
    lo.rank = f.lora_rank;
    lo.alpha = f.lora_alpha;
    lo.targets = absl::StrSplit(f.lora_targets, ',', absl::SkipEmpty());
    ASSIGN_OR_RETURN(lora, train::LoraAdapter::Create(m, lo, r.seed));
    lora_objective = std::make_unique<train::LoraObjective>(objective.get(), lora.get());
    if (leader) std::printf("LoRA: %lld adapter parameters\n", static_cast<long long>(lora->ParameterCount()));
  }
  train::Objective& run_objective = lora_objective ? *lora_objective : *objective;

  RETURN_IF_ERROR(MakeDirs(f.out));
  std::ofstream log;
  if (leader) log.open(f.out + "/train_log.jsonl", f.resume ? std::ios::app : std::ios::trunc);
  RETURN_IF_ERROR(train::Train(m, run_objective, td, r, ro, [&](const train::StepMetrics& s) {
    if (leader) PrintStep(f, s, &log);
  }));
  if (!leader) return absl::OkStatus();
  model::SaveOptions so;
  so.dtype = save_dtype;
  so.copy_files_from = f.model;
  if (lora) m = lora->Merge(m);  // a plain checkpoint: the adapters folded into the weights
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
  cmd->add_option("--peak-flops", f->peak_flops, "GEMM peak for MFU: auto (measured at start), 0 (off) or FLOP/s")
      ->capture_default_str();
  cmd->add_option("--threads", f->threads, "CPU threads (0: all)");
  cmd->add_flag("--json", f->json, "print metrics as JSON lines");
  AddDistFlags(cmd, &f->dist);
}

void AddLoraFlags(CLI::App* cmd, TrainFlags* f) {
  cmd->add_option("--lora-rank", f->lora_rank, "LoRA rank r (0: train the weights themselves)")->capture_default_str();
  cmd->add_option("--lora-alpha", f->lora_alpha, "LoRA alpha (scale alpha/r)")->capture_default_str();
  cmd->add_option("--lora-targets", f->lora_targets, "projections with adapters, comma-separated")
      ->capture_default_str();
}

}  // namespace

void RegisterTrainCommands(CLI::App& app, CommandRegistry& registry) {
  {
    auto f = std::make_shared<TrainFlags>();
    auto* cmd = app.add_subcommand("train", "train a causal LM with cross-entropy (also teacher correction)");
    cmd->add_option("--model", f->model, "starting checkpoint")->required();
    AddRecipeFlags(cmd, f.get());
    AddLoraFlags(cmd, f.get());
    AddRunner(registry, cmd, f, "train", [](TrainFlags flags) { return RunTraining(std::move(flags), Mode::kTrain); });
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
    cmd->add_option("--hidden-pairs", f->hidden_pairs,
                    "hidden-state loss between block outputs, STUDENT:TEACHER[,...] (e.g. 3:7)");
    cmd->add_option("--hidden-loss", f->hidden_loss, "cosine | mse")->capture_default_str();
    cmd->add_option("--hidden-weight", f->hidden_weight, "weight of the hidden-state term")->capture_default_str();
    AddRecipeFlags(cmd, f.get());
    AddLoraFlags(cmd, f.get());
    AddRunner(registry, cmd, f, "distill",
              [](TrainFlags flags) { return RunTraining(std::move(flags), Mode::kDistill); });
  }
  {
    auto f = std::make_shared<TrainFlags>();
    auto* cmd = app.add_subcommand(
        "streamline", "remove N contiguous blocks and train one replacement block in their place (LLM-Streamline)");
    cmd->add_option("--model", f->model, "the model to shorten (and the teacher of the replacement)")->required();
    cmd->add_option("--drop", f->drop, "contiguous blocks removed (the result has N-1 fewer layers)")->required();
    cmd->add_option("--first", f->first, "first removed block (default: the window whose input and output agree most)");
    cmd->add_option("--calibration-batches", f->calibration_batches, "micro batches to choose the window")
        ->capture_default_str();
    AddRecipeFlags(cmd, f.get());
    AddRunner(registry, cmd, f, "streamline",
              [](TrainFlags flags) { return RunTraining(std::move(flags), Mode::kStreamline); });
  }
}

}  // namespace topiary::cli
