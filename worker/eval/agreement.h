// How close a student stays to its teacher on held-out windows
// (docs/design.md, "The algorithms"): the student's own loss, the token-mean KL(p_teacher ‖
// p_student), and top-1 agreement (the share of positions where both models'
// most likely next token is the same). Same windows as EvaluateLoss.
// Blocking; thread-compatible.
#pragma once

#include "absl/status/statusor.h"
#include "worker/eval/perplexity.h"

namespace topiary::eval {

struct AgreementResult {
  LossResult student;
  double kl = 0;              // nats per token
  double top1_agreement = 0;  // in [0, 1]
};

// The models must share a vocabulary.
absl::StatusOr<AgreementResult> EvaluateAgreement(const model::LlamaModel& student, const model::LlamaModel& teacher,
                                                  const data::TokenFile& file, data::TokenRange range,
                                                  const EvalOptions& options);

}  // namespace topiary::eval
