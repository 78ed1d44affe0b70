#include "worker/eval/agreement.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace topiary::eval {

absl::StatusOr<AgreementResult> EvaluateAgreement(const model::LlamaModel& student, const model::LlamaModel& teacher,
                                                  const data::TokenFile& file, data::TokenRange range,
                                                  const EvalOptions& opt) {
  if (student.config.vocab_size != teacher.config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("teacher: vocabulary ", teacher.config.vocab_size,
                                                   " differs from the student's ", student.config.vocab_size));
  }
  if (opt.seq_len <= 0 || opt.batch_size <= 0)
    return absl::InvalidArgumentError("seq_len and batch_size must be positive");
  std::vector<int64_t> starts = data::EvalWindowStarts(range, opt.seq_len, opt.max_windows);
  if (starts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": fewer tokens than one window of ", opt.seq_len));
  }
  torch::NoGradGuard no_grad;
  double nll = 0, kl = 0, agree = 0;
  int64_t n = 0;
  for (size_t i = 0; i < starts.size(); i += opt.batch_size) {
    std::vector<int64_t> chunk(starts.begin() + i, starts.begin() + std::min(starts.size(), i + opt.batch_size));
    ASSIGN_OR_RETURN(data::Batch batch, data::ReadSequences(file, chunk, opt.seq_len));
    at::Tensor s = at::log_softmax(model::Forward(student, batch.inputs).to(at::kFloat).flatten(0, 1), -1);  // (N, V)
    at::Tensor t = at::log_softmax(model::Forward(teacher, batch.inputs).to(at::kFloat).flatten(0, 1), -1);
    at::Tensor y = batch.targets.flatten();
    nll -= s.gather(1, y.unsqueeze(1)).sum().item<double>();
    kl += (t.exp() * (t - s)).sum().item<double>();
    agree += s.argmax(-1).eq(t.argmax(-1)).sum().item<double>();
    n += y.numel();
  }
  AgreementResult r;
  r.student.tokens = n;
  r.student.windows = static_cast<int64_t>(starts.size());
  r.student.loss = nll / static_cast<double>(n);
  r.student.perplexity = std::exp(r.student.loss);
  r.kl = kl / static_cast<double>(n);
  r.top1_agreement = agree / static_cast<double>(n);
  return r;
}

}  // namespace topiary::eval
