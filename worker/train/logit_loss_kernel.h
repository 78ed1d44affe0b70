// Internal: the fused logit loss behind CrossEntropy and DistillationLoss.
// One pass over each row of logits computes the row's CE and forward KL and,
// when asked, d(loss)/d(logits) straight into a buffer of the logits' dtype:
// no fp32 copy of the logits, no log-softmax tensors, no second pass in
// backward. Vectorised (AVX-512 / AVX2 / baseline clones chosen at load
// time), rows spread over ATen's threads. bf16 values are passed as bits.
#pragma once

#include <cstdint>

namespace topiary::train::internal {

struct LogitLossArgs {
  int64_t rows = 0, vocab = 0;
  bool bf16 = false;                 // s, t and grad are bf16 (else fp32)
  const void* s = nullptr;           // student logits (rows, vocab)
  const void* t = nullptr;           // teacher logits (rows, vocab), or null: CE only
  const int64_t* targets = nullptr;  // (rows); a negative target has no CE term
  float tau = 1;                     // KL temperature (CE is always at τ = 1)
  // Gradient, written when `grad` is set (rows, vocab):
  //   g = kl_coef · (softmax(s/τ) − softmax(t/τ)) / τ + ce_coef · (softmax(s) − onehot(target))
  void* grad = nullptr;
  float kl_coef = 0, ce_coef = 0;
  double* kl = nullptr;  // per row KL(softmax(t/τ) ‖ softmax(s/τ)) (rows), when t is set
  double* ce = nullptr;  // per row −log softmax(s)[target], 0 for negative targets (rows)
};

void LogitLoss(const LogitLossArgs& a);

}  // namespace topiary::train::internal
