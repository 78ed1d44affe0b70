#include "worker/stages/prune_stage.h"

#include <torch/torch.h>

#include "common/file_util.h"
#include "common/process.h"
#include "common/status_macros.h"
#include "worker/compress/importance/scores_json.h"
#include "worker/model/checkpoint.h"
#include "worker/model/errors.h"

namespace topiary::stages {

absl::StatusOr<compress::Scores> LoadScores(const std::string& path, const model::ModelConfig& config) {
  if (path.empty()) return compress::Scores{};
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, size_t{2} << 30));
  return compress::ScoresFromJson(text, config);
}

absl::StatusOr<PruneStageResult> RunPrune(const StageContext& ctx, const PruneStageOptions& o) {
  PruneStageResult out;
  RETURN_IF_ERROR(CatchTorch("prune", [&]() -> absl::Status {
    ASSIGN_OR_RETURN(model::ModelConfig config, model::LoadConfig(o.model));
    RETURN_IF_ERROR(compress::ValidateTarget(config, o.target));  // before any heavy work
    ASSIGN_OR_RETURN(compress::Scores scores, LoadScores(o.scores, config));
    ASSIGN_OR_RETURN(compress::PrunePlan plan, compress::MakePlan(config, scores, o.target));
    ctx.Phase("saving");
    model::SaveOptions so;
    so.dtype = o.dtype;
    so.copy_files_from = o.model;
    so.durable = o.durable;
    RETURN_IF_ERROR(compress::PruneCheckpoint(o.model, plan, o.out, so));  // streams tensor by tensor
    out.config = plan.config;
    out.before = model::CountParams(config);
    out.after = model::CountParams(plan.config);
    out.peak_rss_bytes = PeakRssBytes();
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace topiary::stages
