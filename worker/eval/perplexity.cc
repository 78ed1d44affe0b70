#include "worker/eval/perplexity.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace topiary::eval {

absl::StatusOr<LossResult> EvaluateLoss(const model::LlamaModel& model, const data::TokenFile& file,
                                        data::TokenRange range, const EvalOptions& opt) {
  if (opt.seq_len <= 0 || opt.batch_size <= 0)
    return absl::InvalidArgumentError("seq_len and batch_size must be positive");
  std::vector<int64_t> starts = data::EvalWindowStarts(range, opt.seq_len, opt.max_windows);
  if (starts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        file.path(), ": ", range.size(), " tokens are fewer than one window of seq_len ", opt.seq_len, " (+1)"));
  }
  torch::NoGradGuard no_grad;
  double total_nll = 0;
  int64_t total_tokens = 0;
  for (size_t i = 0; i < starts.size(); i += opt.batch_size) {
    std::vector<int64_t> chunk(starts.begin() + i, starts.begin() + std::min(starts.size(), i + opt.batch_size));
    ASSIGN_OR_RETURN(data::Batch batch, data::ReadSequences(file, chunk, opt.seq_len));
    at::Tensor logits = model::Forward(model, batch.inputs).to(at::kFloat);  // (B, T, V)
    at::Tensor nll = at::cross_entropy_loss(logits.flatten(0, 1), batch.targets.flatten(), {}, at::Reduction::Sum);
    total_nll += nll.item<double>();
    total_tokens += batch.targets.numel();
  }
  LossResult r;
  r.tokens = total_tokens;
  r.windows = static_cast<int64_t>(starts.size());
  r.loss = total_nll / static_cast<double>(total_tokens);
  r.perplexity = std::exp(r.loss);
  return r;
}

}  // namespace topiary::eval
