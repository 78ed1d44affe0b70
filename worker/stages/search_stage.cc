#include "worker/stages/search_stage.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/units.h"
#include "worker/model/checkpoint.h"
#include "worker/model/errors.h"
#include "worker/stages/prune_stage.h"
#include "worker/train/objectives.h"

namespace topiary::stages {

absl::StatusOr<int64_t> ParseBudget(const std::string& text, int64_t total, absl::string_view field) {
  double fraction = 0;
  if (absl::SimpleAtod(text, &fraction) && fraction > 0 && fraction <= 1 && text.find('.') != std::string::npos) {
    return static_cast<int64_t>(std::llround(fraction * static_cast<double>(total)));
  }
  return ParseCount(text, field);
}

absl::StatusOr<SearchStageResult> RunSearch(const StageContext& ctx, const SearchStageOptions& o) {
  SearchStageResult out;
  RETURN_IF_ERROR(CatchTorch("search", [&]() -> absl::Status {
    SetThreads(ctx.threads);
    ASSIGN_OR_RETURN(out.original, model::LoadConfig(o.model));
    compress::SearchSpace space = o.space;
    ASSIGN_OR_RETURN(space.budget, ParseBudget(o.params, model::CountParams(out.original).total(), "--params"));
    ASSIGN_OR_RETURN(std::vector<compress::Candidate> candidates, compress::EnumerateCandidates(out.original, space));
    ASSIGN_OR_RETURN(compress::Scores scores, LoadScores(o.scores, out.original));
    ctx.Phase("loading");
    ASSIGN_OR_RETURN(model::LlamaModel m, model::OpenCheckpoint(o.model, at::kFloat));
    ASSIGN_OR_RETURN(auto file, OpenData(o.data, o.model, out.original.vocab_size));
    std::fprintf(stderr, "search: %zu candidates within %.0f%% of %s parameters\n", candidates.size(),
                 space.tolerance * 100, FormatCount(static_cast<double>(space.budget)).c_str());
    ctx.Phase("scoring");
    ASSIGN_OR_RETURN(out.ranked,
                     compress::RankCandidates(m, scores, std::move(candidates), *file, o.eval, space.depth_metric));
    out.table = compress::FormatTable(out.original, out.ranked);
    if (!o.out.empty()) {
      RETURN_IF_ERROR(MakeDirs(o.out));
      RETURN_IF_ERROR(WriteFileAtomically(o.out + "/search.txt", out.table));
      RETURN_IF_ERROR(
          WriteFileAtomically(o.out + "/search.json", compress::CandidatesToJson(out.original, space, out.ranked)));
    }
    return absl::OkStatus();
  }));
  return out;
}

namespace {

// Held-out loss of `m` on the search's data.
absl::StatusOr<double> HeldOutLoss(const model::LlamaModel& m, const data::TokenFile& file,
                                   const eval::EvalOptions& eo) {
  torch::NoGradGuard no_grad;
  ASSIGN_OR_RETURN(eval::LossResult r, eval::EvaluateLoss(m, file, {0, file.size()}, eo));
  return r.loss;
}

// Distils the probe for o.probe_tokens from the teacher, in memory.
absl::Status DistillProbe(const StageContext& ctx, const SearchProbeOptions& o, model::LlamaModel& teacher,
                          model::LlamaModel& student, SearchProbeResult* out) {
  model::CastModel(teacher, o.train_dtype);
  model::CastModel(student, o.train_dtype);
  ASSIGN_OR_RETURN(auto file, OpenData(o.train_data, o.search.model, teacher.config.vocab_size));
  train::TrainRecipe r = o.recipe;
  r.steps = std::max<int64_t>(1, o.probe_tokens / (r.global_batch * r.seq_len));
  r.warmup_steps = std::min(r.warmup_steps, r.steps / 4);
  r.eval_every = 0;
  r.log_every = 0;
  out->probe_steps = r.steps;
  ASSIGN_OR_RETURN(std::unique_ptr<train::DistillationObjective> objective,
                   train::DistillationObjective::Create(&teacher, student, train::KdOptions{}));
  train::TrainData td;
  td.file = file.get();
  td.train_range = {0, file->size()};
  train::RunOptions ro;
  ro.stop = ctx.stop;
  ro.every_step = [&](const train::StepMetrics& s) {
    Progress p;
    p.phase = "probe training";
    p.step = s.step;
    p.total_steps = s.steps;
    p.tokens = s.tokens;
    p.loss = s.loss;
    p.tokens_per_second = s.tokens_per_second;
    p.eta_seconds =
        s.tokens_per_second > 0 ? (s.steps - s.step) * r.global_batch * r.seq_len / s.tokens_per_second : -1;
    p.milestone = s.step == 1 || s.step == s.steps;
    ctx.Report(p);
  };
  return train::Train(student, *objective, td, r, ro, nullptr);
}

}  // namespace

absl::StatusOr<SearchProbeResult> RunSearchProbe(const StageContext& ctx, const SearchProbeOptions& o) {
  SearchProbeResult out;
  RETURN_IF_ERROR(CatchTorch("search probe", [&]() -> absl::Status {
    SetThreads(ctx.threads);
    ASSIGN_OR_RETURN(model::ModelConfig original, model::LoadConfig(o.search.model));
    compress::SearchSpace space = o.search.space;
    ASSIGN_OR_RETURN(space.budget, ParseBudget(o.search.params, model::CountParams(original).total(), "search.params"));
    ASSIGN_OR_RETURN(std::vector<compress::Candidate> candidates, compress::EnumerateCandidates(original, space));
    out.candidates = static_cast<int>(candidates.size());
    if (o.index < 0 || o.index >= out.candidates) {
      out.skipped = true;
      return absl::OkStatus();
    }
    out.candidate = candidates[o.index];
    out.candidate.target.depth_metric = space.depth_metric;
    ASSIGN_OR_RETURN(compress::Scores scores, LoadScores(o.search.scores, original));
    ASSIGN_OR_RETURN(compress::PrunePlan plan, compress::MakePlan(original, scores, out.candidate.target));
    ctx.Phase("pruning");
    model::SaveOptions so;
    so.dtype = o.save_dtype;
    so.copy_files_from = o.search.model;
    RETURN_IF_ERROR(compress::PruneCheckpoint(o.search.model, plan, o.out + "/model", so));
    ctx.Phase("scoring");
    ASSIGN_OR_RETURN(model::LlamaModel teacher, model::LoadCheckpoint(o.search.model, at::kFloat));
    model::LlamaModel student = compress::ApplyPlan(teacher, plan);
    for (auto& [name, t] : student.NamedParameters()) *t = t->clone();  // distillation writes in place
    ASSIGN_OR_RETURN(auto heldout, OpenData(o.search.data, o.search.model, original.vocab_size));
    ASSIGN_OR_RETURN(out.zero_shot_loss, HeldOutLoss(student, *heldout, o.search.eval));
    out.candidate.loss = out.zero_shot_loss;
    out.candidate.perplexity = std::exp(out.zero_shot_loss);
    if (o.probe_tokens <= 0) return absl::OkStatus();
    RETURN_IF_ERROR(DistillProbe(ctx, o, teacher, student, &out));
    ctx.Phase("scoring");
    ASSIGN_OR_RETURN(double after, HeldOutLoss(student, *heldout, o.search.eval));
    out.distilled_loss = after;
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace topiary::stages
