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
  o->flat_param_ = at::zeros({o->padded_}, at::kFloat);
  for (const Param& p : o->params_) o->flat_param_.narrow(0, p.offset, p.numel).copy_(p.tensor->detach().flatten());
  if (W > 1) {
    RETURN_IF_ERROR(comm->Broadcast(o->flat_param_, 0));
    for (const Param& p : o->params_) {
      p.tensor->detach().view(-1).copy_(o->flat_param_.narrow(0, p.offset, p.numel));
    }
  }
  o->master_ = o->flat_param_.narrow(0, o->lo_, shard).clone();
  o->m_ = at::zeros({shard}, at::kFloat);
  o->v_ = at::zeros({shard}, at::kFloat);
  o->flat_grad_ = at::zeros({o->padded_}, at::kFloat);
  o->shard_grad_ = at::zeros({shard}, at::kFloat);
  return o;
}

absl::StatusOr<double> ShardedAdamW::Step(double lr, double clip) {
  torch::NoGradGuard no_grad;
  ++step_;
  const int64_t W = comm_->world_size();
  flat_grad_.zero_();
  for (const Param& p : params_) {
    const at::Tensor& g = p.tensor->grad();
    if (g.defined()) flat_grad_.narrow(0, p.offset, p.numel).copy_(g.flatten());
  }
  RETURN_IF_ERROR(comm_->ReduceScatter(flat_grad_, shard_grad_));
  if (W > 1) shard_grad_.div_(static_cast<double>(W));
  at::Tensor sq = shard_grad_.to(at::kDouble).pow(2).sum().reshape({1});
  RETURN_IF_ERROR(comm_->AllReduce(sq));
  const double norm = std::sqrt(sq.item<double>());
  const float scale = static_cast<float>(ClipScale(norm, clip));

  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(step_));
  const double bc2 = 1 - std::pow(b2, static_cast<double>(step_));
  const float decay = static_cast<float>(1 - lr * options_.weight_decay);
  for (const Param& p : params_) {  // every piece of a parameter inside this shard
    const int64_t begin = std::max(p.offset, lo_), end = std::min(p.offset + p.numel, hi_);
    if (begin >= end) continue;
    const int64_t at = begin - lo_;
    internal::FusedUpdate(shard_grad_.data_ptr<float>() + at, m_.data_ptr<float>() + at, v_.data_ptr<float>() + at,
                          master_.data_ptr<float>() + at, master_.data_ptr<float>() + at, end - begin,
                          static_cast<float>(b1), static_cast<float>(b2), static_cast<float>(lr / bc1),
                          static_cast<float>(1 / bc2), static_cast<float>(options_.eps), p.decay ? decay : 1.0f,
                          scale);
  }
  RETURN_IF_ERROR(GatherParameters());
  return norm;
}

absl::Status ShardedAdamW::GatherParameters() {
  RETURN_IF_ERROR(comm_->AllGather(master_, flat_param_));
  for (const Param& p : params_) p.tensor->detach().view(-1).copy_(flat_param_.narrow(0, p.offset, p.numel));
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
      return absl::InvalidArgumentError(absl::StrCat(
          "optimizer state: '", key, "' missing or not a shard of ", master_.numel(),
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
