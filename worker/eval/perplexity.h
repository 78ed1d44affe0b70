// Token-weighted language-model loss and perplexity over consecutive
// non-overlapping windows of a token file (see data::EvalWindowStarts).
// Forward only; blocking; thread-compatible.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/data/sampler.h"
#include "worker/data/token_file.h"
#include "worker/model/llama.h"

namespace topiary::eval {

struct LossResult {
  double loss = 0;        // mean negative log-likelihood per predicted token (nats)
  double perplexity = 0;  // exp(loss)
  int64_t tokens = 0;     // predicted tokens
  int64_t windows = 0;
};

struct EvalOptions {
  int64_t seq_len = 256;
  int64_t max_windows = 0;  // 0: all
  int64_t batch_size = 8;
};

absl::StatusOr<LossResult> EvaluateLoss(const model::LlamaModel& model, const data::TokenFile& file,
                                        data::TokenRange range, const EvalOptions& options);

}  // namespace topiary::eval
