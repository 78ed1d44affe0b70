#include "worker/train/trainer.h"

#include <torch/torch.h>

#include <chrono>
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/eval/perplexity.h"
#include "worker/train/sharded_adamw.h"
#include "worker/train/train_checkpoint.h"

namespace topiary::train {

absl::Status ValidateRecipe(const TrainRecipe& r, int world) {
  auto bad = [](absl::string_view field, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
  };
  if (r.steps <= 0) return bad("steps", "must be positive");
  if (r.seq_len <= 0) return bad("seq_len", "must be positive");
  if (r.micro_batch <= 0) return bad("micro_batch", "must be positive");
  if (r.global_batch <= 0 || r.global_batch % (r.micro_batch * world) != 0) {
    return bad("global_batch", absl::StrCat(r.global_batch, " must be a positive multiple of micro_batch ",
                                            r.micro_batch, world > 1 ? absl::StrCat(" x ", world, " ranks") : ""));
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

std::vector<std::string> TrainableParameters(const model::LlamaModel& model, const RunOptions& o) {
  model::LlamaModel m = model;  // shares storage; NamedParameters is non-const
  std::vector<std::string> out;
  const int64_t L = m.config.num_hidden_layers, first = L - o.train_last_blocks;
  for (auto& [name, t] : m.NamedParameters()) {
    if (!o.train_blocks.empty()) {
      for (int64_t l : o.train_blocks) {
        if (name.rfind(absl::StrCat("model.layers.", l, "."), 0) == 0) out.push_back(name);
      }
      continue;
    }
    bool train = o.train_last_blocks <= 0 || name == "model.norm.weight" || name == "lm_head.weight" ||
                 (m.config.tie_word_embeddings && name == "model.embed_tokens.weight");
    for (int64_t l = std::max<int64_t>(0, first); l < L && !train; ++l) {
      train = name.rfind(absl::StrCat("model.layers.", l, "."), 0) == 0;
    }
    if (train) out.push_back(name);
  }
  return out;
}

namespace {

// Sums (loss, kl, ce, tokens) over ranks: the step's means over all tokens.
absl::Status AverageOverRanks(dist::Communicator& comm, Objective::Parts* p) {
  if (comm.world_size() == 1) return absl::OkStatus();
  at::Tensor t = torch::tensor({p->loss, p->kl, p->ce, p->hidden}, at::kDouble);
  RETURN_IF_ERROR(comm.AllReduce(t, dist::ReduceOp::kAvg));
  p->loss = t[0].item<double>();
  p->kl = t[1].item<double>();
  p->ce = t[2].item<double>();
  p->hidden = t[3].item<double>();
  return absl::OkStatus();
}

// The strongest stop request of any rank (0 without a stop flag).
absl::StatusOr<int> AgreeOnStop(const std::atomic<int>* stop, dist::Communicator& comm) {
  if (stop == nullptr) return kStopNone;
  int local = stop->load();
  if (comm.world_size() == 1) return local;
  at::Tensor t = torch::tensor({static_cast<double>(local)}, at::kDouble);
  RETURN_IF_ERROR(comm.AllReduce(t, dist::ReduceOp::kMax));
  return static_cast<int>(t.item<double>());
}

}  // namespace

absl::Status Train(model::LlamaModel& model, Objective& objective, const TrainData& data, const TrainRecipe& r,
                   const RunOptions& o, const StepCallback& callback) {
  std::unique_ptr<dist::Communicator> local;
  dist::Communicator* comm = o.comm;
  if (comm == nullptr) local = dist::MakeLocalCommunicator(), comm = local.get();
  const int W = comm->world_size();
  RETURN_IF_ERROR(ValidateRecipe(r, W));
  if (data.file == nullptr) return absl::InvalidArgumentError("data: no token file");
  ASSIGN_OR_RETURN(data::SequenceSampler sampler,
                   data::SequenceSampler::Create(data.file, data.train_range, r.seq_len, r.seed));
  torch::manual_seed(r.seed);

  if (o.train_last_blocks < 0 || o.train_last_blocks > model.config.num_hidden_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("train_last_blocks: ", o.train_last_blocks, " outside [0, ", model.config.num_hidden_layers, "]"));
  }
  for (int64_t l : o.train_blocks) {
    if (l < 0 || l >= model.config.num_hidden_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("train_blocks: block ", l, " outside [0, ", model.config.num_hidden_layers, ")"));
    }
  }
  std::vector<std::string> trainable;
  if (!objective.FreezesModel()) trainable = TrainableParameters(model, o);
  NamedTensors named;
  std::vector<at::Tensor*> params;
  for (auto& [name, t] : model.NamedParameters()) {
    const bool train = std::find(trainable.begin(), trainable.end(), name) != trainable.end();
    t->requires_grad_(train);
    if (train) named.emplace_back(name, t), params.push_back(t);
  }
  for (auto& [name, t] : objective.Parameters()) {
    t->requires_grad_(true);
    named.emplace_back(name, t), params.push_back(t);
  }
  if (named.empty()) return absl::InvalidArgumentError("nothing to train: every parameter is frozen");
  if (model.config.tie_word_embeddings) model.lm_head = model.embed_tokens;
  ASSIGN_OR_RETURN(std::unique_ptr<ShardedAdamW> optimizer, ShardedAdamW::Create(named, r.adamw, comm));

  TrainState state;
  state.world_size = W;
  state.seed = r.seed;
  if (o.resume && !o.checkpoint_dir.empty()) {
    ASSIGN_OR_RETURN(std::optional<std::string> latest, LatestTrainCheckpoint(o.checkpoint_dir));
    if (latest.has_value()) {
      ASSIGN_OR_RETURN(state, LoadTrainCheckpoint(*latest, model, *optimizer, *comm, r.seed));
    }
  }
  const int64_t per_rank = r.global_batch / W, accum = per_rank / r.micro_batch;
  const double flops_per_token = objective.FlopsPerToken(model.config, r.seq_len);
  const int64_t tokens_at_start = state.tokens, resumed_from = state.step;
  auto t0 = std::chrono::steady_clock::now();

  for (int64_t step = state.step; step < r.steps; ++step) {
    for (at::Tensor* p : params) p->mutable_grad() = at::Tensor();
    Objective::Parts sum;
    sum.kl = sum.hidden = 0;
    bool has_kl = false, has_hidden = false;
    for (int64_t a = 0; a < accum; ++a) {
      std::vector<int64_t> idx;  // this rank's sequences of the global batch, round-robin
      for (int64_t i = a * r.micro_batch; i < (a + 1) * r.micro_batch; ++i) {
        idx.push_back(step * r.global_batch + comm->rank() + i * W);
      }
      ASSIGN_OR_RETURN(data::Batch batch, sampler.Sequences(idx));
      Objective::Parts p = objective.ForwardBackward(model, batch, 1.0 / static_cast<double>(accum));
      sum.loss += p.loss / static_cast<double>(accum);
      sum.ce += p.ce / static_cast<double>(accum);
      if (p.kl >= 0) sum.kl += p.kl / static_cast<double>(accum), has_kl = true;
      if (p.hidden >= 0) sum.hidden += p.hidden / static_cast<double>(accum), has_hidden = true;
    }
    RETURN_IF_ERROR(AverageOverRanks(*comm, &sum));
    if (!std::isfinite(sum.loss)) {
      return absl::InternalError(
          absl::StrCat("loss is ", sum.loss, " at step ", step + 1, "; stopping (the last checkpoint is kept)"));
    }
    StepMetrics m;
    m.lr = CosineLr(step, r.steps, r.warmup_steps, r.lr, r.min_lr);
    ASSIGN_OR_RETURN(m.grad_norm, optimizer->Step(m.lr, r.clip));
    state.step = step + 1;
    state.tokens += r.global_batch * r.seq_len;
    m.step = state.step;
    m.steps = r.steps;
    m.loss = sum.loss;
    m.ce = sum.ce;
    m.kl = has_kl ? sum.kl : -1;
    m.hidden = has_hidden ? sum.hidden : -1;
    m.tokens = state.tokens;
    m.optimizer_state_bytes = optimizer->StateBytes();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    m.tokens_per_second = static_cast<double>(state.tokens - tokens_at_start) / seconds;
    if (o.peak_flops > 0) m.mfu = m.tokens_per_second / W * flops_per_token / o.peak_flops;
    const bool last = m.step == r.steps;
    if (data.eval_range.size() > 0 && (last || (r.eval_every > 0 && m.step % r.eval_every == 0))) {
      eval::EvalOptions eo;
      eo.seq_len = r.seq_len;
      eo.max_windows = r.eval_windows;
      eo.batch_size = r.micro_batch;
      torch::NoGradGuard no_grad;
      ASSIGN_OR_RETURN(eval::LossResult er,
                       eval::EvaluateLoss(objective.Effective(model), data.eval_file ? *data.eval_file : *data.file,
                                          data.eval_range, eo));
      m.eval_loss = er.loss;
    }
    m.resumed_from = resumed_from;
    ASSIGN_OR_RETURN(const int stop, AgreeOnStop(o.stop, *comm));
    if (!o.checkpoint_dir.empty() &&
        (last || stop != kStopNone || (o.checkpoint_every > 0 && m.step % o.checkpoint_every == 0))) {
      RETURN_IF_ERROR(WriteTrainCheckpoint(o.checkpoint_dir, state, model, *optimizer, *comm, o.keep_last));
      m.checkpointed = true;
    }
    if (callback && (last || m.eval_loss >= 0 || r.log_every <= 0 || m.step % r.log_every == 0 || m.step == 1)) {
      callback(m);
    }
    if (o.every_step) o.every_step(m);
    if (stop != kStopNone && !last) {
      return absl::CancelledError(absl::StrCat("stopped after step ", m.step, " of ", r.steps,
                                               stop == kStopDrain ? " (draining)" : " (cancelled)",
                                               o.checkpoint_dir.empty() ? "" : "; checkpoint written"));
    }
  }
  for (at::Tensor* p : params) {
    p->mutable_grad() = at::Tensor();
    p->requires_grad_(false);
  }
  return absl::OkStatus();
}

absl::Status TrainCausalLm(model::LlamaModel& model, const TrainData& data, const TrainRecipe& recipe,
                           const StepCallback& callback) {
  CrossEntropyObjective ce;
  return Train(model, ce, data, recipe, RunOptions{}, callback);
}

}  // namespace topiary::train
