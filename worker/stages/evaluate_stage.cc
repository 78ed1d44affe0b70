#include "worker/stages/evaluate_stage.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "worker/data/tokenizer.h"
#include "worker/eval/agreement.h"
#include "worker/eval/zero_shot.h"
#include "worker/model/checkpoint.h"
#include "worker/model/errors.h"
#include "worker/model/sampling.h"

namespace topiary::stages {

absl::StatusOr<EvaluateResult> RunEvaluate(const StageContext& ctx, const EvaluateOptions& o) {
  EvaluateResult out;
  RETURN_IF_ERROR(CatchTorch("eval", [&]() -> absl::Status {
    SetThreads(ctx.threads);
    if (o.data.path.empty() && o.tasks.empty())
      return absl::InvalidArgumentError("--data or --tasks: give at least one");
    if (!o.teacher.empty() && o.data.path.empty()) return absl::InvalidArgumentError("--teacher: needs --data");
    ctx.Phase("loading");
    ASSIGN_OR_RETURN(model::LlamaModel m, model::OpenCheckpoint(o.model, o.dtype));
    torch::NoGradGuard no_grad;
    if (!o.data.path.empty()) {
      ASSIGN_OR_RETURN(auto file, OpenData(o.data, o.model, m.config.vocab_size));
      ctx.Phase("evaluating");
      if (!o.teacher.empty()) {
        ASSIGN_OR_RETURN(model::LlamaModel t, model::OpenCheckpoint(o.teacher, o.dtype));
        ASSIGN_OR_RETURN(eval::AgreementResult a, eval::EvaluateAgreement(m, t, *file, {0, file->size()}, o.eval));
        out.loss = a.student;
        out.kl = a.kl;
        out.top1_agreement = a.top1_agreement;
      } else {
        ASSIGN_OR_RETURN(eval::LossResult r, eval::EvaluateLoss(m, *file, {0, file->size()}, o.eval));
        out.loss = r;
      }
    }
    if (!o.sample_prompt.empty()) {
      ctx.Phase("sampling");
      model::SampleOptions so;
      so.greedy = true;
      so.max_new_tokens = o.sample_tokens;
      out.sample = model::Generate(m, o.sample_prompt, so);
    }
    if (o.tasks.empty()) return absl::OkStatus();
    ctx.Phase("scoring tasks");
    const std::string tok_path = o.tokenizer.empty() ? o.model + "/tokenizer.model" : o.tokenizer;
    ASSIGN_OR_RETURN(auto tok, data::Tokenizer::Load(tok_path));
    for (const std::string& path : o.tasks) {
      ASSIGN_OR_RETURN(std::string jsonl, ReadFileToString(path, size_t{1} << 30));
      auto examples = eval::ParseMcTasks(jsonl, o.max_examples);
      if (!examples.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", examples.status().message()));
      ASSIGN_OR_RETURN(eval::McResult mc, eval::EvaluateMultipleChoice(m, *tok, *examples, o.eval.seq_len));
      out.tasks.push_back({path, mc.examples, mc.acc, mc.acc_norm});
    }
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace topiary::stages
