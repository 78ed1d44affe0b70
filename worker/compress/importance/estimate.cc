#include "worker/compress/importance/estimate.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/compress/importance/model_metrics.h"

namespace topiary::compress {

const std::vector<std::string>& ModelDepthMetrics() {
  static const std::vector<std::string> k = {"lm_loss", "taylor", "magnitude_l1", "magnitude_l2", "reverse_order",
                                             "random"};
  return k;
}

const std::vector<std::string>& ActivationDepthMetrics() {
  static const std::vector<std::string> k = {"block_influence", "relative_l1", "relative_l2", "angular_distance",
                                             "attention_influence", "mlp_influence"};
  return k;
}

absl::StatusOr<std::vector<data::Batch>> CalibrationBatches(const data::TokenFile& file, data::TokenRange range,
                                                            const ImportanceOptions& o) {
  if (o.samples <= 0) return absl::InvalidArgumentError("calibration.samples: must be positive");
  if (o.batch <= 0) return absl::InvalidArgumentError("calibration.batch: must be positive");
  ASSIGN_OR_RETURN(data::SequenceSampler sampler, data::SequenceSampler::Create(&file, range, o.seq_len, o.seed));
  std::vector<data::Batch> batches;
  for (int64_t i = 0; i < o.samples; i += o.batch) {
    std::vector<int64_t> idx;
    for (int64_t j = i; j < std::min(o.samples, i + o.batch); ++j) idx.push_back(j);
    ASSIGN_OR_RETURN(data::Batch b, sampler.Sequences(idx));
    batches.push_back(std::move(b));
  }
  return batches;
}

absl::StatusOr<ImportanceResult> EstimateImportance(const model::LlamaModel& m, const data::TokenFile& file,
                                                    data::TokenRange range, const ImportanceOptions& o) {
  for (const std::string& name : o.extra_depth) {
    bool known = false;
    for (const auto& k : ModelDepthMetrics()) known |= k == name;
    for (const auto& k : ActivationDepthMetrics()) known |= k == name;
    if (!known) return absl::InvalidArgumentError(absl::StrCat("importance.depth: unknown metric '", name, "'"));
  }
  ASSIGN_OR_RETURN(std::vector<data::Batch> batches, CalibrationBatches(file, range, o));
  ActivationStats stats(m.config, o.agg, o.mlp);
  {
    torch::NoGradGuard no_grad;
    model::ForwardOptions fo;
    fo.observer = &stats;
    fo.return_hidden = true;  // the logits are not needed
    for (const data::Batch& b : batches) model::Forward(m, b.inputs, fo);
  }
  ImportanceResult r;
  r.sequences = stats.sequences();
  r.tokens = r.sequences * o.seq_len;
  Scores& s = r.scores;
  s.heads = stats.HeadScores();
  s.kv_groups = stats.KvGroupScores();
  s.neurons = stats.NeuronScores();
  s.channels = stats.ChannelScores();
  r.channels_per_norm = stats.ChannelScoresPerNorm();
  r.angular_windows = stats.AngularDistance();
  s.depth["block_influence"] = stats.BlockInfluence();
  s.depth["relative_l1"] = stats.RelativeL1();
  s.depth["relative_l2"] = stats.RelativeL2();
  s.depth["angular_distance"] = r.angular_windows[0];
  s.depth["attention_influence"] = stats.AttentionInfluence();
  s.depth["mlp_influence"] = stats.MlpInfluence();
  for (const std::string& name : o.extra_depth) {
    if (s.depth.count(name)) continue;
    ASSIGN_OR_RETURN(s.depth[name], ModelDepthScores(name, m, batches, o.seed));
  }
  return r;
}

}  // namespace topiary::compress
