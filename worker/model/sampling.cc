#include "worker/model/sampling.h"

#include <torch/torch.h>

namespace topiary::model {

std::vector<int64_t> Generate(const LlamaModel& model, const std::vector<int64_t>& prompt, const SampleOptions& opt) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(opt.seed);
  std::vector<int64_t> context = prompt;
  std::vector<int64_t> out;
  const int64_t max_ctx = opt.max_context > 0 ? opt.max_context : model.config.max_position_embeddings;
  for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
    int64_t start = std::max<int64_t>(0, static_cast<int64_t>(context.size()) - max_ctx);
    at::Tensor ids = at::tensor(std::vector<int64_t>(context.begin() + start, context.end()), at::kLong).unsqueeze(0);
    at::Tensor logits = Forward(model, ids).select(1, ids.size(1) - 1).squeeze(0).to(at::kFloat);  // (V)
    int64_t next;
    if (opt.greedy || opt.temperature <= 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      at::Tensor probs = at::softmax(logits / opt.temperature, -1);
      auto [sorted, order] = probs.sort(/*dim=*/-1, /*descending=*/true);
      at::Tensor cum = sorted.cumsum(-1);
      // Keep tokens whose preceding mass is below top_p (always the first).
      at::Tensor keep = (cum - sorted) < opt.top_p;
      sorted = sorted * keep.to(at::kFloat);
      at::Tensor pick = at::multinomial(sorted / sorted.sum(), 1, /*replacement=*/false, gen);
      next = order[pick.item<int64_t>()].item<int64_t>();
    }
    out.push_back(next);
    context.push_back(next);
    if (next == opt.stop_token) break;
  }
  return out;
}

}  // namespace topiary::model
