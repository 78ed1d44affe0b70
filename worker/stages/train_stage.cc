#include "worker/stages/train_stage.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "worker/data/sampler.h"
#include "worker/model/checkpoint.h"
#include "worker/model/errors.h"
#include "worker/train/peak.h"
#include "worker/train/streamline.h"

namespace topiary::stages {
namespace {

using json = nlohmann::json;

absl::Status CheckOptions(const TrainStageOptions& o, int world_size) {
  RETURN_IF_ERROR(train::ValidateRecipe(o.recipe, world_size));
  if (o.mode == TrainMode::kDistill && !(o.kd.temperature > 0)) {
    return absl::InvalidArgumentError("--temperature: must be positive");
  }
  if (o.mode == TrainMode::kDistill && o.kd.ce_weight < 0) {
    return absl::InvalidArgumentError("--ce-weight: must be non-negative");
  }
  if (!(o.hidden.weight > 0)) return absl::InvalidArgumentError("--hidden-weight: must be positive");
  if (o.use_lora && o.lora.rank <= 0) return absl::InvalidArgumentError("--lora-rank: must be positive (0: no LoRA)");
  if (o.use_lora && o.train_last_blocks > 0) {
    return absl::InvalidArgumentError("--lora-rank: cannot be combined with --train-last-blocks");
  }
  if (o.mode != TrainMode::kDistill && !o.hidden.pairs.empty()) {
    return absl::InvalidArgumentError("--hidden-pairs: only for distill");
  }
  return absl::OkStatus();
}

// The replacement window of LLM-Streamline: given, or the best on calibration batches.
absl::StatusOr<int64_t> ChooseWindow(const TrainStageOptions& o, const model::LlamaModel& m,
                                     const data::TokenFile* file, data::TokenRange range) {
  if (o.first >= 0) return o.first;
  const train::TrainRecipe& r = o.recipe;
  ASSIGN_OR_RETURN(data::SequenceSampler sampler, data::SequenceSampler::Create(file, range, r.seq_len, r.seed + 1));
  std::vector<data::Batch> calibration;
  for (int64_t b = 0; b < o.calibration_batches; ++b) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < r.micro_batch; ++i) idx.push_back(b * r.micro_batch + i);
    ASSIGN_OR_RETURN(data::Batch batch, sampler.Sequences(idx));
    calibration.push_back(std::move(batch));
  }
  return train::BestReplacementWindow(m, calibration, o.drop);
}

absl::Status Run(const StageContext& ctx, TrainStageOptions o, const train::StepCallback& on_log,
                 TrainStageResult* out) {
  SetThreads(ctx.threads);
  train::TrainRecipe& r = o.recipe;
  if (o.tokens > 0) r.steps = std::max<int64_t>(1, o.tokens / (r.global_batch * r.seq_len));
  RETURN_IF_ERROR(CheckOptions(o, ctx.world_size));
  o.hidden.seed = r.seed;
  double peak = o.peak_flops;
  if (peak < 0) peak = train::MeasureGemmPeak(o.dtype);
  ctx.Phase("loading");
  ASSIGN_OR_RETURN(model::LlamaModel m, model::LoadCheckpoint(o.model, o.dtype));
  std::unique_ptr<model::LlamaModel> teacher;
  if (o.mode == TrainMode::kDistill) {
    ASSIGN_OR_RETURN(model::LlamaModel t,  // forward only: used in place from its files when its dtype is o.dtype
                     model::OpenCheckpoint(o.teacher, o.dtype, model::Widen::kAtLoad));
    teacher = std::make_unique<model::LlamaModel>(std::move(t));
  }
  ASSIGN_OR_RETURN(auto file, OpenData(o.data, o.model, m.config.vocab_size));
  train::TrainData td;
  td.file = file.get();
  std::unique_ptr<data::TokenFile> eval_file;
  if (!o.eval_data.path.empty()) {
    DataOptions ed = o.eval_data;
    if (ed.tokenizer.empty()) ed.tokenizer = o.data.tokenizer;
    ASSIGN_OR_RETURN(eval_file, OpenData(ed, o.model, m.config.vocab_size));
    td.train_range = {0, file->size()};
    td.eval_file = eval_file.get();
    td.eval_range = {0, eval_file->size()};
  } else {
    ASSIGN_OR_RETURN(auto split, data::SplitHeldOut(file->size(), o.held_out));
    td.train_range = split.first;
    td.eval_range = split.second;
  }
  std::unique_ptr<dist::Communicator> local;
  dist::Communicator* comm = ctx.comm;
  if (comm == nullptr) local = dist::MakeLocalCommunicator(), comm = local.get();
  const bool leader = comm->rank() == 0;
  train::RunOptions ro;
  ro.comm = comm;
  ro.checkpoint_dir = o.checkpoint_dir;
  ro.checkpoint_every = o.checkpoint_every;
  ro.keep_last = o.keep_checkpoints;
  ro.resume = o.resume;
  ro.train_last_blocks = o.train_last_blocks;
  ro.peak_flops = peak;
  ro.stop = ctx.stop;

  std::unique_ptr<train::Objective> objective;
  if (o.mode == TrainMode::kStreamline) {  // the original becomes the teacher of its replacement block
    teacher = std::make_unique<model::LlamaModel>(m);
    ASSIGN_OR_RETURN(out->first_replaced, ChooseWindow(o, m, file.get(), td.train_range));
    ASSIGN_OR_RETURN(m, train::ReplaceWindow(*teacher, out->first_replaced, o.drop));
    if (leader) {
      ctx.Note(absl::StrCat("replacing blocks ", out->first_replaced, "..", out->first_replaced + o.drop - 1,
                            " with one block trained on their input and output"));
    }
    ro.train_blocks = {out->first_replaced};
    objective = std::make_unique<train::ReplacementObjective>(teacher.get(), out->first_replaced, o.drop);
  } else if (o.mode == TrainMode::kDistill) {
    train::KdOptions kd = o.kd;
    kd.kl_weight = o.kl_weight;
    ASSIGN_OR_RETURN(objective, train::DistillationObjective::Create(teacher.get(), m, kd, o.hidden));
  } else {
    objective = std::make_unique<train::CrossEntropyObjective>();
  }
  std::unique_ptr<train::LoraAdapter> lora;
  std::unique_ptr<train::LoraObjective> lora_objective;
  if (o.use_lora) {
    ASSIGN_OR_RETURN(lora, train::LoraAdapter::Create(m, o.lora, r.seed));
    lora_objective = std::make_unique<train::LoraObjective>(objective.get(), lora.get());
    out->lora_parameters = lora->ParameterCount();
    if (leader) ctx.Note(absl::StrCat("LoRA: ", out->lora_parameters, " adapter parameters"));
  }
  train::Objective& run_objective = lora_objective ? *lora_objective : *objective;

  RETURN_IF_ERROR(MakeDirs(o.out));
  std::ofstream log;
  if (leader) {
    log.open(o.log_path.empty() ? o.out + "/train_log.jsonl" : o.log_path, o.resume ? std::ios::app : std::ios::trunc);
  }
  ro.every_step = [&](const train::StepMetrics& s) {
    out->steps = s.steps;
    out->resumed_from = s.resumed_from;
    out->tokens = s.tokens;
    out->loss = s.loss;
    if (s.eval_loss >= 0) out->eval_loss = s.eval_loss;
    out->tokens_per_second = s.tokens_per_second;
    out->mfu = s.mfu;
    Progress p;
    p.phase = "training";
    p.step = s.step;
    p.total_steps = s.steps;
    p.tokens = s.tokens;
    p.loss = s.loss;
    p.tokens_per_second = s.tokens_per_second;
    p.mfu = s.mfu;
    p.eta_seconds = s.tokens_per_second > 0
                        ? static_cast<double>(s.steps - s.step) * r.global_batch * r.seq_len / s.tokens_per_second
                        : -1;
    p.milestone = s.step == s.resumed_from + 1 || s.step == s.steps || s.eval_loss >= 0 || s.checkpointed;
    ctx.Report(p);
  };
  ctx.Phase("training");
  const auto t0 = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(train::Train(m, run_objective, td, r, ro, [&](const train::StepMetrics& s) {
    if (leader) log << StepJson(s) << "\n" << std::flush;
    if (leader && on_log) on_log(s);
  }));
  out->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out->config = m.config;
  if (!leader) return absl::OkStatus();
  ctx.Phase("saving");
  model::SaveOptions so;
  so.dtype = o.save_dtype;
  so.copy_files_from = o.model;
  so.durable = o.durable;
  if (lora) m = lora->Merge(m);  // a plain checkpoint: the adapters folded into the weights
  return model::SaveCheckpoint(m, o.out, so);
}

}  // namespace

std::string StepJson(const train::StepMetrics& s) {
  json j = {{"step", s.step},
            {"loss", s.loss},
            {"lr", s.lr},
            {"grad_norm", s.grad_norm},
            {"tokens", s.tokens},
            {"tokens_per_second", s.tokens_per_second},
            {"optimizer_state_bytes", s.optimizer_state_bytes}};
  if (s.kl >= 0) j["kl"] = s.kl, j["ce"] = s.ce;
  if (s.hidden >= 0) j["hidden"] = s.hidden;
  if (s.mfu >= 0) j["mfu"] = s.mfu;
  if (s.eval_loss >= 0) j["eval_loss"] = s.eval_loss;
  return j.dump();
}

absl::StatusOr<double> ParsePeakFlops(const std::string& text) {
  if (text == "auto") return -1.0;
  double v = 0;
  if (!absl::SimpleAtod(text, &v) || v < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--peak-flops: '", text, "' is not auto or a FLOP/s figure"));
  }
  return v;
}

absl::StatusOr<TrainStageResult> RunTraining(const StageContext& ctx, const TrainStageOptions& o,
                                             const train::StepCallback& on_log) {
  TrainStageResult out;
  RETURN_IF_ERROR(CatchTorch(o.mode == TrainMode::kDistill      ? "distill"
                             : o.mode == TrainMode::kStreamline ? "streamline"
                                                                : "train",
                             [&] { return Run(ctx, o, on_log, &out); }));
  return out;
}

}  // namespace topiary::stages
