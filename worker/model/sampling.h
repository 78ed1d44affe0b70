// Text generation from a LlamaModel: greedy or nucleus (top-p) sampling with
// temperature. Each step re-runs the forward pass on the whole context (no KV
// cache), which is adequate for the inspection use it serves. Deterministic
// for a seed. Thread-compatible.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/model/llama.h"

namespace topiary::model {

struct SampleOptions {
  int64_t max_new_tokens = 64;
  bool greedy = false;
  double temperature = 0.8;
  double top_p = 0.95;  // keep the smallest set of tokens with this much probability
  uint64_t seed = 0;
  int64_t stop_token = -1;  // stop after emitting this id (e.g. eos); -1: never
  int64_t max_context = 0;  // keep only the last tokens as context; 0: max_position_embeddings
};

// Returns the generated ids only (not the prompt). `prompt` must be non-empty
// and every id below vocab_size.
std::vector<int64_t> Generate(const LlamaModel& model, const std::vector<int64_t>& prompt,
                              const SampleOptions& options);

}  // namespace topiary::model
