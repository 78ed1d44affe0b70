#include "worker/train/trainer.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/eval/perplexity.h"

namespace topiary::train {

absl::Status ValidateRecipe(const TrainRecipe& r) {
  auto bad = [](absl::string_view field, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
  };
  if (r.steps <= 0) return bad("steps", "must be positive");
  if (r.seq_len <= 0) return bad("seq_len", "must be positive");
  if (r.micro_batch <= 0) return bad("micro_batch", "must be positive");
  if (r.global_batch <= 0 || r.global_batch % r.micro_batch != 0) {
    return bad("global_batch", absl::StrCat(r.global_batch, " must be a positive multiple of micro_batch ", r.micro_batch));
  }
  if (!(r.lr > 0)) return bad("lr", "must be positive");
  if (r.min_lr < 0 || r.min_lr > r.lr) return bad("min_lr", "must be in [0, lr]");
  if (r.warmup_steps < 0) return bad("warmup_steps", "must be non-negative");
  if (r.clip < 0) return bad("clip", "must be non-negative");
  if (!(r.adamw.beta1 >= 0 && r.adamw.beta1 < 1)) return bad("beta1", "must be in [0, 1)");
  if (!(r.adamw.beta2 >= 0 && r.adamw.beta2 < 1)) return bad("beta2", "must be in [0, 1)");
  if (r.adamw.weight_decay < 0) return bad("weight_decay", "must be non-negative");
  return absl::OkStatus();
}

double ForwardBackwardCe(const model::LlamaModel& model, const data::Batch& batch, double grad_scale) {
  at::Tensor logits = model::Forward(model, batch.inputs);                                  // (B, T, V)
  at::Tensor loss = at::cross_entropy_loss(logits.to(at::kFloat).flatten(0, 1), batch.targets.flatten());
  (loss * grad_scale).backward();
  return loss.item<double>();
}

absl::Status TrainCausalLm(model::LlamaModel& model, const TrainData& data, const TrainRecipe& r,
                           const StepCallback& callback) {
  RETURN_IF_ERROR(ValidateRecipe(r));
  if (data.file == nullptr) return absl::InvalidArgumentError("data: no token file");
  ASSIGN_OR_RETURN(data::SequenceSampler sampler,
                   data::SequenceSampler::Create(data.file, data.train_range, r.seq_len, r.seed));
  torch::manual_seed(r.seed);

  auto named = model.NamedParameters();
  std::vector<at::Tensor*> params;
  for (auto& [name, t] : named) {
    t->requires_grad_(true);
    params.push_back(t);
  }
  if (model.config.tie_word_embeddings) model.lm_head = model.embed_tokens;
  AdamW optimizer(named, r.adamw);
  const int64_t accum = r.global_batch / r.micro_batch;
  int64_t tokens = 0;
  auto t0 = std::chrono::steady_clock::now();

  for (int64_t step = 0; step < r.steps; ++step) {
    for (at::Tensor* p : params) p->mutable_grad() = at::Tensor();
    double step_loss = 0;
    for (int64_t a = 0; a < accum; ++a) {
      std::vector<int64_t> idx;
      for (int64_t i = 0; i < r.micro_batch; ++i) idx.push_back(step * r.global_batch + a * r.micro_batch + i);
      ASSIGN_OR_RETURN(data::Batch batch, sampler.Sequences(idx));
      step_loss += ForwardBackwardCe(model, batch, 1.0 / static_cast<double>(accum)) / static_cast<double>(accum);
      tokens += batch.inputs.numel();
    }
    if (!std::isfinite(step_loss)) {
      return absl::InternalError(absl::StrCat("loss is ", step_loss, " at step ", step + 1, "; stopping"));
    }
    StepMetrics m;
    m.grad_norm = GradNorm(params);
    m.lr = CosineLr(step, r.steps, r.warmup_steps, r.lr, r.min_lr);
    optimizer.Step(m.lr, ClipScale(m.grad_norm, r.clip));
    m.step = step + 1;
    m.steps = r.steps;
    m.loss = step_loss;
    m.tokens = tokens;
    m.tokens_per_second = static_cast<double>(tokens) /
                          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    bool last = m.step == r.steps;
    if (data.eval_range.size() > 0 && (last || (r.eval_every > 0 && m.step % r.eval_every == 0))) {
      eval::EvalOptions eo;
      eo.seq_len = r.seq_len;
      eo.max_windows = r.eval_windows;
      eo.batch_size = r.micro_batch;
      ASSIGN_OR_RETURN(eval::LossResult er, eval::EvaluateLoss(model, data.eval_file ? *data.eval_file : *data.file, data.eval_range, eo));
      m.eval_loss = er.loss;
    }
    if (callback && (last || m.eval_loss >= 0 || r.log_every <= 0 || m.step % r.log_every == 0 || m.step == 1)) {
      callback(m);
    }
  }
  for (at::Tensor* p : params) {
    p->mutable_grad() = at::Tensor();
    p->requires_grad_(false);
  }
  return absl::OkStatus();
}

}  // namespace topiary::train
