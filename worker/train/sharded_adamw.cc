#include "worker/train/sharded_adamw.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/train/adamw_kernel.h"

namespace topiary::train {

absl::StatusOr<std::unique_ptr<ShardedAdamW>> ShardedAdamW::Create(
    std::vector<std::pair<std::string, at::Tensor*>> params, AdamWOptions options, dist::Communicator* comm) {
  torch::NoGradGuard no_grad;
  std::unique_ptr<ShardedAdamW> o(new ShardedAdamW);
  o->options_ = options;
  o->comm_ = comm;
  for (auto& [name, t] : params) {
    o->params_.push_back({name, t, o->total_, t->numel(), t->dim() >= 2});
    o->total_ += t->numel();
  }
  const int64_t W = comm->world_size();
  o->padded_ = (o->total_ + W - 1) / W * W;
  const int64_t shard = o->padded_ / W;
  o->lo_ = comm->rank() * shard;
  o->hi_ = o->lo_ + shard;
  at::Tensor flat = at::zeros({o->padded_}, at::kFloat);
  for (const Param& p : o->params_) flat.narrow(0, p.offset, p.numel).copy_(p.tensor->detach().flatten());
  if (W > 1) {
    RETURN_IF_ERROR(comm->Broadcast(flat, 0));
    for (const Param& p : o->params_) p.tensor->detach().view(-1).copy_(flat.narrow(0, p.offset, p.numel));
    o->master_ = flat.narrow(0, o->lo_, shard).clone();
    o->flat_param_ = flat;  // scratch of the all-gather
    o->flat_grad_ = at::zeros({o->padded_}, at::kFloat);
    o->shard_grad_ = at::zeros({shard}, at::kFloat);
  } else {
    o->master_ = flat;  // one rank owns everything: no scratch
  }
  o->m_ = at::zeros({shard}, at::kFloat);
  o->v_ = at::zeros({shard}, at::kFloat);
  return o;
}

namespace {

// A bf16 tensor's data as the bit patterns the kernels take.
uint16_t* Bits(const at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); }

// A gradient the kernels read: fp32 or bf16, contiguous.
at::Tensor KernelGrad(const at::Tensor& g) {
  at::Tensor c = g.contiguous();
  return c.scalar_type() == at::kFloat || c.scalar_type() == at::kBFloat16 ? c : c.to(at::kFloat);
}

}  // namespace

absl::StatusOr<double> ShardedAdamW::Step(double lr, double clip) {
  torch::NoGradGuard no_grad;
  ++step_;
  const int64_t W = comm_->world_size();
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(step_));
  const double bc2 = 1 - std::pow(b2, static_cast<double>(step_));
  const float decay = static_cast<float>(1 - lr * options_.weight_decay);
  internal::AdamWStep a{static_cast<float>(b1),
                        static_cast<float>(b2),
                        static_cast<float>(lr / bc1),
                        static_cast<float>(1 / bc2),
                        static_cast<float>(options_.eps),
                        1.0f,
                        1.0f};
  if (W == 1) {
    // The whole space is this rank's: update straight from each gradient
    // into its weight, no flat copies and no gather.
    std::vector<at::Tensor> grads(params_.size());
    double sq = 0;
    for (size_t i = 0; i < params_.size(); ++i) {
      const at::Tensor& g = params_[i].tensor->grad();
      // No gradient counts as zero, as on more ranks (the flat space is zero-filled there).
      grads[i] = g.defined() ? KernelGrad(g) : at::zeros({params_[i].numel}, at::kFloat);
      sq += grads[i].scalar_type() == at::kFloat ? internal::SumSquares(grads[i].data_ptr<float>(), grads[i].numel())
                                                 : internal::SumSquares(Bits(grads[i]), grads[i].numel());
    }
    const double norm = std::sqrt(sq);
    a.scale = static_cast<float>(ClipScale(norm, clip));
    for (size_t i = 0; i < params_.size(); ++i) {
      const Param& p = params_[i];
      const at::Tensor& g = grads[i];
      a.decay = p.decay ? decay : 1.0f;
      float* m = m_.data_ptr<float>() + p.offset;
      float* v = v_.data_ptr<float>() + p.offset;
      float* master = master_.data_ptr<float>() + p.offset;
      const at::ScalarType wt = p.tensor->scalar_type();
      auto run = [&](auto* gp) {
        if (wt == at::kBFloat16) {
          internal::FusedUpdate(gp, m, v, master, Bits(*p.tensor), p.numel, a);
        } else if (wt == at::kFloat && p.tensor->is_contiguous()) {
          internal::FusedUpdate(gp, m, v, master, p.tensor->data_ptr<float>(), p.numel, a);
        } else {
          internal::FusedUpdate(gp, m, v, master, master, p.numel, a);
          p.tensor->detach().view(-1).copy_(master_.narrow(0, p.offset, p.numel));
        }
      };
      if (g.scalar_type() == at::kFloat)
        run(g.data_ptr<float>());
      else
        run(Bits(g));
    }
    return norm;
  }
  for (const Param& p : params_) {
    const at::Tensor& g = p.tensor->grad();
    at::Tensor dst = flat_grad_.narrow(0, p.offset, p.numel);
    if (g.defined())
      dst.copy_(g.flatten());
    else
      dst.zero_();
  }
  if (padded_ > total_) flat_grad_.narrow(0, total_, padded_ - total_).zero_();
  RETURN_IF_ERROR(comm_->ReduceScatter(flat_grad_, shard_grad_));
  shard_grad_.div_(static_cast<double>(W));
  at::Tensor sq = at::full({1}, internal::SumSquares(shard_grad_.data_ptr<float>(), shard_grad_.numel()),
                           at::TensorOptions().dtype(at::kDouble));
  RETURN_IF_ERROR(comm_->AllReduce(sq));
  const double norm = std::sqrt(sq.item<double>());
  a.scale = static_cast<float>(ClipScale(norm, clip));
  for (const Param& p : params_) {  // every piece of a parameter inside this shard
    const int64_t begin = std::max(p.offset, lo_), end = std::min(p.offset + p.numel, hi_);
    if (begin >= end) continue;
    const int64_t at = begin - lo_;
    a.decay = p.decay ? decay : 1.0f;
    float* master = master_.data_ptr<float>() + at;
    internal::FusedUpdate(shard_grad_.data_ptr<float>() + at, m_.data_ptr<float>() + at, v_.data_ptr<float>() + at,
                          master, master, end - begin, a);
  }
  RETURN_IF_ERROR(GatherParameters());
  return norm;
}

absl::Status ShardedAdamW::GatherParameters() {
  at::Tensor flat = master_;  // one rank: the master is the whole space
  if (comm_->world_size() > 1) {
    RETURN_IF_ERROR(comm_->AllGather(master_, flat_param_));
    flat = flat_param_;
  }
  for (const Param& p : params_) p.tensor->detach().view(-1).copy_(flat.narrow(0, p.offset, p.numel));
  return absl::OkStatus();
}

int64_t ShardedAdamW::StateBytes() const { return (master_.numel() + m_.numel() + v_.numel()) * 4; }

std::map<std::string, at::Tensor> ShardedAdamW::ShardState() const {
  return {{"master", master_}, {"m", m_}, {"v", v_}};
}

absl::Status ShardedAdamW::LoadShardState(const std::map<std::string, at::Tensor>& state, int64_t step) {
  torch::NoGradGuard no_grad;
  for (const char* key : {"master", "m", "v"}) {
    auto it = state.find(key);
    if (it == state.end() || it->second.numel() != master_.numel() || it->second.scalar_type() != at::kFloat) {
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer state: '", key, "' missing or not a shard of ", master_.numel(),
                       " fp32 values (was the checkpoint written by another world size or model?)"));
    }
  }
  master_.copy_(state.at("master").view(-1));
  m_.copy_(state.at("m").view(-1));
  v_.copy_(state.at("v").view(-1));
  step_ = step;
  return GatherParameters();
}

}  // namespace topiary::train
