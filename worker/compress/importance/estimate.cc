#include "worker/compress/importance/estimate.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/compress/importance/depth_metric.h"

namespace topiary::compress {

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
                                                    data::TokenRange range, const ImportanceOptions& o,
                                                    dist::Communicator* comm) {
  std::unique_ptr<dist::Communicator> local;
  if (comm == nullptr) local = dist::MakeLocalCommunicator(), comm = local.get();
  std::vector<const DepthMetric*> extra;
  for (const std::string& name : o.extra_depth) {
    absl::StatusOr<const DepthMetric*> metric = FindDepthMetric(name);
    if (!metric.ok()) return absl::InvalidArgumentError(absl::StrCat("importance.depth: ", metric.status().message()));
    extra.push_back(*metric);
  }
  ASSIGN_OR_RETURN(std::vector<data::Batch> all, CalibrationBatches(file, range, o));
  std::vector<data::Batch> shard;  // round-robin: rank r takes batches r, r+W, ...
  for (size_t i = comm->rank(); i < all.size(); i += comm->world_size()) shard.push_back(std::move(all[i]));
  all.clear();

  ActivationStats stats(m.config, o.agg, o.mlp);
  {
    torch::NoGradGuard no_grad;
    model::ForwardOptions fo;
    fo.observer = &stats;
    fo.return_hidden = true;  // the logits are not needed
    for (const data::Batch& b : shard) model::Forward(m, b.inputs, fo);
  }
  if (comm->world_size() > 1) {
    at::Tensor packed = stats.Packed();
    RETURN_IF_ERROR(comm->AllReduce(packed));
    stats.SetPacked(packed);
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
  const DepthContext ctx{&m, &shard, &stats, comm, o.seed};
  for (const DepthMetric& metric : DepthMetrics()) {
    if (metric.source == DepthSource::kActivations) {
      ASSIGN_OR_RETURN(s.depth[metric.name], metric.score(ctx));
    }
  }
  for (const DepthMetric* metric : extra) {
    if (s.depth.count(metric->name)) continue;
    ASSIGN_OR_RETURN(s.depth[metric->name], metric->score(ctx));
  }
  return r;
}

}  // namespace topiary::compress
