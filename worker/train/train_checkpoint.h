// Training checkpoints for exact resume (docs/design.md, "The algorithms"). Layout:
//   <dir>/step-00000042/
//     model/                                   Hugging Face directory, the model's own dtype
//     optimizer-rank-00000-of-00002.safetensors  this rank's ZeRO-1 shard: master, m, v (fp32)
//     state.json                               {"version", "step", "tokens", "world_size", "seed"}
// A checkpoint is written into step-N.tmp/ and renamed when every rank's
// shard is in (a barrier), so a crash leaves the previous checkpoint intact;
// rank 0 then removes all but the newest keep_last. The data position and
// RNG are a function of (seed, step): the sampler is seeded per epoch and
// the loop draws nothing else at random.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "worker/dist/communicator.h"
#include "worker/model/llama.h"
#include "worker/train/sharded_adamw.h"

namespace topiary::train {

struct TrainState {
  int64_t step = 0;    // optimizer steps done
  int64_t tokens = 0;  // all ranks
  int world_size = 1;
  uint64_t seed = 0;
};

// Collective: every rank calls it at the same step.
absl::Status WriteTrainCheckpoint(const std::string& dir, const TrainState& state, model::LlamaModel& model,
                                  const ShardedAdamW& optimizer, dist::Communicator& comm, int keep_last);

// The newest complete checkpoint under `dir`, if any.
absl::StatusOr<std::optional<std::string>> LatestTrainCheckpoint(const std::string& dir);

// Restores model weights, this rank's optimizer shard and the state.
// Refuses a checkpoint of another world size, seed or model shape.
absl::StatusOr<TrainState> LoadTrainCheckpoint(const std::string& path, model::LlamaModel& model,
                                               ShardedAdamW& optimizer, dist::Communicator& comm, uint64_t seed);

}  // namespace topiary::train
