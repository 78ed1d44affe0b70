#include "worker/stages/importance_stage.h"

#include <torch/torch.h>

#include <map>

#include "common/file_util.h"
#include "common/status_macros.h"
#include "worker/compress/importance/plots.h"
#include "worker/compress/importance/scores_json.h"
#include "worker/model/checkpoint.h"
#include "worker/model/errors.h"

namespace topiary::stages {
namespace {

std::vector<double> Means(const at::Tensor& t) {
  at::Tensor m = t.to(at::kDouble).mean(-1).contiguous();
  return std::vector<double>(m.data_ptr<double>(), m.data_ptr<double>() + m.numel());
}

absl::Status WriteOutputs(const ImportanceStageOptions& o, const model::ModelConfig& config,
                          const compress::ImportanceResult& r) {
  RETURN_IF_ERROR(MakeDirs(o.out));
  compress::ScoresProvenance prov{o.model, o.data.path, o.importance};
  RETURN_IF_ERROR(WriteFileAtomically(o.out + "/scores.json", compress::ScoresToJson(config, r, prov)));
  RETURN_IF_ERROR(
      WriteFileAtomically(o.out + "/depth.svg", compress::LineChartSvg("Depth importance per layer", r.scores.depth)));
  std::map<std::string, std::vector<double>> width;
  width["heads (mean)"] = Means(r.scores.heads);
  width["kv groups (mean)"] = Means(r.scores.kv_groups);
  width["neurons (mean)"] = Means(r.scores.neurons);
  const int64_t L = config.num_hidden_layers;
  at::Tensor per_norm = r.channels_per_norm.narrow(0, 0, L * 2).view({L, 2, config.hidden_size});
  width["input norm channels (mean)"] = Means(per_norm.select(1, 0));
  width["post norm channels (mean)"] = Means(per_norm.select(1, 1));
  return WriteFileAtomically(o.out + "/width.svg", compress::LineChartSvg("Width statistics per layer", width));
}

}  // namespace

absl::StatusOr<ImportanceStageResult> RunImportance(const StageContext& ctx, const ImportanceStageOptions& o) {
  ImportanceStageResult out;
  RETURN_IF_ERROR(CatchTorch("importance", [&]() -> absl::Status {
    SetThreads(ctx.threads);
    ctx.Phase("loading");
    // fp32 statistics: a bf16 model stays mapped and is widened one weight at a time as it is used.
    ASSIGN_OR_RETURN(model::LlamaModel m, model::OpenCheckpoint(o.model, at::kFloat));
    ASSIGN_OR_RETURN(auto file, OpenData(o.data, o.model, m.config.vocab_size));
    ctx.Phase("calibrating");
    std::unique_ptr<dist::Communicator> local;
    dist::Communicator* comm = ctx.comm;
    if (comm == nullptr) local = dist::MakeLocalCommunicator(), comm = local.get();
    ASSIGN_OR_RETURN(compress::ImportanceResult r,
                     compress::EstimateImportance(m, *file, {0, file->size()}, o.importance, comm));
    out.sequences = r.sequences;
    out.tokens = r.tokens;
    for (const auto& [name, v] : r.scores.depth) out.depth_metrics.push_back(name);
    if (comm->rank() != 0) return absl::OkStatus();  // every rank holds the same scores; rank 0 writes them
    ctx.Phase("saving");
    RETURN_IF_ERROR(WriteOutputs(o, m.config, r));
    out.scores_path = o.out + "/scores.json";
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace topiary::stages
