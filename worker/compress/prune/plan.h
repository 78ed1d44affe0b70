// Pruning to an isomorphic (or explicitly marked non-isomorphic) smaller
// model, in ModelOpt's lifecycle: validate the target -> plan which units to
// keep from importance scores -> apply by slicing every tensor consistently
// (docs/design.md, "The algorithms"). Width is uniform across layers; each layer keeps its
// own top-scoring heads and neurons; embedding channels are kept globally.
// Kept units stay in their original order. Pure functions; thread-compatible.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/compress/importance/scores.h"
#include "worker/model/checkpoint.h"
#include "worker/model/llama.h"

namespace topiary::compress {

// 0 (or empty) means "keep as is".
struct PruneTarget {
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t num_hidden_layers = 0;
  std::string depth_metric = "block_influence";  // ranks layers when num_hidden_layers is set
  bool contiguous = false;                       // drop one window of consecutive blocks
  std::vector<int64_t> drop_layers;              // explicit, original indices
  std::vector<int64_t> drop_attention;           // non-isomorphic: attention sublayers
  std::vector<int64_t> drop_mlp;                 // non-isomorphic: MLP sublayers
  int64_t divisor = 1;                           // widths must be multiples (e.g. tensor parallel)
  // Minitron's head residual redistribution when query heads are pruned
  // within KV groups: ranking a group's R heads by score, keeping K, the
  // i-th kept head (1-based, i in (K-(R-K), K]) becomes
  // head_i + (head_i - head_{2K-i+1}), on its q_proj rows (and bias).
  bool redistribute_heads = false;
};

struct LayerPlan {
  int64_t source = 0;            // original layer index
  std::vector<int64_t> heads;    // kept query heads (original indices), grouped by kept KV group
  std::vector<int64_t> groups;   // kept KV groups
  std::vector<int64_t> neurons;  // kept MLP neurons
  bool has_attention = true;
  bool has_mlp = true;
  // Head residual redistribution: (kept head, pruned partner), original
  // indices; q_kept <- 2 q_kept - q_partner.
  std::vector<std::pair<int64_t, int64_t>> head_residual;
};

struct PrunePlan {
  model::ModelConfig config;      // the pruned shape
  std::vector<int64_t> channels;  // kept embedding channels
  std::vector<LayerPlan> layers;
};

// Checks a target against a config before any work; errors name the field.
absl::Status ValidateTarget(const model::ModelConfig& config, const PruneTarget& target);

// Plans from scores. Width axes with a target need the matching scores.
absl::StatusOr<PrunePlan> MakePlan(const model::ModelConfig& config, const Scores& scores, const PruneTarget& target);

// Returns the pruned model: sliced copies of the kept weights, and the source
// tensors themselves where nothing is cut (shared storage: copy before
// modifying in place). `source` is not modified; its dtype is kept. apply.cc.
model::LlamaModel ApplyPlan(const model::LlamaModel& source, const PrunePlan& plan);

// Block k of the pruned model, sliced from `source`.
model::BlockWeights PruneBlock(const model::LlamaModel& source, const PrunePlan& plan, size_t k);

// Prunes the checkpoint in `source_dir` into `out_dir` tensor by tensor: the
// source is mapped (MapCheckpoint), each output block is sliced when the
// writer reaches it and dropped after, so peak memory is one pruned block or
// one embedding matrix, never the model. Tokenizer files are copied.
absl::Status PruneCheckpoint(const std::string& source_dir, const PrunePlan& plan, const std::string& out_dir,
                             const model::SaveOptions& options);

// Indices of the k largest entries, ascending by index (original order).
std::vector<int64_t> TopK(const at::Tensor& scores, int64_t k);

}  // namespace topiary::compress
