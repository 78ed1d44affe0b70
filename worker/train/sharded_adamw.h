// ZeRO-1 AdamW (docs/design.md, "The algorithms"): optimizer state sharded across the
// ranks of a Communicator. The parameters are laid end to end in one flat
// fp32 space of N elements (padded to a multiple of the world size W); rank r
// owns elements [r·N/W, (r+1)·N/W) and keeps the fp32 master copy and both
// moments of that range only, so optimizer memory per rank falls as 1/W.
// A step: reduce-scatter the gradients (mean over ranks), the global norm
// from the shards (one scalar all-reduce) for clipping, the fused AdamW
// update on the shard, all-gather the parameters back into the model. With
// W = 1 it is exactly AdamW's update.
//
// Collective contract: every rank constructs it with the same parameter
// shapes and calls Step the same number of times. Not thread-safe.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/dist/communicator.h"
#include "worker/train/adamw.h"

namespace topiary::train {

class ShardedAdamW {
 public:
  // Broadcasts rank 0's parameters first, so every rank starts identical.
  static absl::StatusOr<std::unique_ptr<ShardedAdamW>> Create(std::vector<std::pair<std::string, at::Tensor*>> params,
                                                              AdamWOptions options, dist::Communicator* comm);

  // One update from the parameters' .grad() (each rank's mean over its own
  // micro batches). Gradients are averaged over ranks and clipped to global
  // norm `clip` (0: no clipping). Returns the global norm before clipping.
  absl::StatusOr<double> Step(double lr, double clip);

  int64_t steps() const { return step_; }
  // Bytes of optimizer state on this rank (master shard and moments).
  int64_t StateBytes() const;

  // This rank's state for a checkpoint: "master", "m", "v" (1-D fp32), and
  // the layout it belongs to.
  std::map<std::string, at::Tensor> ShardState() const;
  int64_t flat_size() const { return padded_; }
  // Restores a shard written by ShardState on a run of the same world size
  // and the same parameters; then copies the masters back into the model.
  absl::Status LoadShardState(const std::map<std::string, at::Tensor>& state, int64_t step);

 private:
  struct Param {
    std::string name;
    at::Tensor* tensor;
    int64_t offset, numel;
    bool decay;
  };
  ShardedAdamW() = default;
  absl::Status GatherParameters();

  std::vector<Param> params_;
  AdamWOptions options_;
  dist::Communicator* comm_ = nullptr;
  int64_t total_ = 0, padded_ = 0, lo_ = 0, hi_ = 0;  // this rank owns [lo_, hi_)
  at::Tensor master_, m_, v_;                         // (hi_ - lo_) fp32
  at::Tensor flat_grad_, shard_grad_, flat_param_;    // scratch
  int64_t step_ = 0;
};

}  // namespace topiary::train
