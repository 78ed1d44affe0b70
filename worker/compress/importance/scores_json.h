// scores.json, the versioned importance artifact (docs/design.md, "The algorithms").
//
// Schema, version 1 (every score: higher = more important):
// {
//   "version": 1,
//   "model": {"path": "...", "config": {config.json as parsed}},
//   "calibration": {"data": "...", "samples": 64, "seq_len": 256, "seed": 0, "tokens": 16384},
//   "aggregation": {"batch": "l2", "seq": "mean", "mlp_activation": "down_proj_input"},
//   "width": {
//     "heads":     [[...NH] x L],        attention head h of layer l
//     "kv_groups": [[...G] x L],         L2 of the group's head scores
//     "neurons":   [[...FF] x L],        MLP neuron j of layer l
//     "channels":  [...C],               summed over every RMSNorm
//     "channels_per_norm": [[...C] x (2L+1)]   input/post norms per layer, then the final norm
//   },
//   "depth": {"block_influence": [...L], "lm_loss": [...L], ...,
//             "angular_distance_windows": {"1": [...L], "2": [...L-1], ...}}
// }
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "worker/compress/importance/estimate.h"

namespace topiary::compress {

inline constexpr int kScoresVersion = 1;

struct ScoresProvenance {
  std::string model_path, data_path;
  ImportanceOptions options;
};

std::string ScoresToJson(const model::ModelConfig& config, const ImportanceResult& result,
                         const ScoresProvenance& provenance);

// Parses scores.json and checks its shapes against `config` (the model being
// pruned): a scores file of another model is refused.
absl::StatusOr<Scores> ScoresFromJson(const std::string& text, const model::ModelConfig& config);

}  // namespace topiary::compress
