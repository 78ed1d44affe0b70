// Depth metrics that need the model rather than activations: a registry
// (explicit switch) from name to per-layer scores, higher = more important.
//   lm_loss      LM loss on the calibration batches with block i removed
//                (Minitron; Shortened LLaMA): one extra forward per block.
//   taylor       Σ over block i's weights of |∂L/∂W · W| (LLM-Pruner).
//   magnitude_l1 / magnitude_l2   Σ|W| / ‖W‖₂ over block i.
//   reverse_order  L - i: later blocks are less important (arXiv:2411.15558).
//   random       seeded uniform scores.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/sampler.h"
#include "worker/model/llama.h"

namespace topiary::compress {

absl::StatusOr<std::vector<double>> ModelDepthScores(const std::string& metric, const model::LlamaModel& model,
                                                     const std::vector<data::Batch>& calibration, uint64_t seed);

// Mean cross-entropy of `model` over the batches.
double CalibrationLoss(const model::LlamaModel& model, const std::vector<data::Batch>& batches);

}  // namespace topiary::compress
