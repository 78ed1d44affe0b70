#include "worker/train/adamw.h"

#include <torch/torch.h>

#include <cmath>

namespace topiary::train {

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor*>> params, AdamWOptions options) : options_(options) {
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : params) {
    Slot s;
    s.name = name;
    s.param = p;
    s.master = p->scalar_type() == at::kFloat ? p->detach() : p->detach().to(at::kFloat);
    s.m = at::zeros_like(s.master);
    s.v = at::zeros_like(s.master);
    s.decay = p->dim() >= 2;
    slots_.push_back(std::move(s));
  }
}

void AdamW::Step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(step_));
  const double bc2 = 1 - std::pow(b2, static_cast<double>(step_));
  for (Slot& s : slots_) {
    const at::Tensor& g0 = s.param->grad();
    if (!g0.defined()) continue;
    at::Tensor g = g0.scalar_type() == at::kFloat ? g0 : g0.to(at::kFloat);
    s.m.mul_(b1).add_(g, 1 - b1);
    s.v.mul_(b2).addcmul_(g, g, 1 - b2);
    if (s.decay && options_.weight_decay > 0) s.master.mul_(1 - lr * options_.weight_decay);
    at::Tensor denom = (s.v / bc2).sqrt_().add_(options_.eps);
    s.master.addcdiv_(s.m, denom, -lr / bc1);
    if (s.param->scalar_type() != at::kFloat) s.param->detach().copy_(s.master);
  }
}

int64_t AdamW::StateBytes() const {
  int64_t n = 0;
  for (const Slot& s : slots_) {
    n += (s.m.numel() + s.v.numel()) * 4;
    if (s.param->scalar_type() != at::kFloat) n += s.master.numel() * 4;
  }
  return n;
}

double ClipGradNorm(const std::vector<at::Tensor*>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  double sq = 0;
  for (at::Tensor* p : params) {
    if (p->grad().defined()) sq += p->grad().to(at::kFloat).pow(2).sum().item<double>();
  }
  double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    double scale = max_norm / (norm + 1e-6);
    for (at::Tensor* p : params) {
      if (p->grad().defined()) p->mutable_grad().mul_(scale);
    }
  }
  return norm;
}

double CosineLr(int64_t step, int64_t total, int64_t warmup, double peak, double min) {
  if (warmup > 0 && step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (step >= total) return min;
  double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
  return min + 0.5 * (peak - min) * (1 + std::cos(M_PI * progress));
}

}  // namespace topiary::train
