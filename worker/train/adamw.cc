#include "worker/train/adamw.h"
#include "worker/train/adamw_kernel.h"

#include <torch/torch.h>

#include <cmath>

namespace topiary::train {
namespace {

// A bf16 tensor's data as the bit patterns the kernels take.
uint16_t* Bits(const at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); }

}  // namespace

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

void AdamW::Step(double lr, double grad_scale) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(step_));
  const double bc2 = 1 - std::pow(b2, static_cast<double>(step_));
  for (Slot& s : slots_) {
    at::Tensor g = s.param->grad();
    if (!g.defined()) continue;
    g = g.contiguous();
    internal::AdamWStep a{
        static_cast<float>(b1),           static_cast<float>(b2),
        static_cast<float>(lr / bc1),     static_cast<float>(1 / bc2),
        static_cast<float>(options_.eps), s.decay ? static_cast<float>(1 - lr * options_.weight_decay) : 1.0f,
        static_cast<float>(grad_scale)};
    const int64_t n = s.master.numel();
    float* m = s.m.data_ptr<float>();
    float* v = s.v.data_ptr<float>();
    float* master = s.master.data_ptr<float>();
    if (g.scalar_type() != at::kFloat && g.scalar_type() != at::kBFloat16) g = g.to(at::kFloat);  // fp16
    const at::ScalarType wt = s.param->scalar_type();
    auto run = [&](auto* gp) {
      if (wt == at::kBFloat16) {
        internal::FusedUpdate(gp, m, v, master, Bits(*s.param), n, a);
      } else {
        internal::FusedUpdate(gp, m, v, master, master, n, a);
        if (wt != at::kFloat) s.param->detach().copy_(s.master);
      }
    };
    if (g.scalar_type() == at::kFloat)
      run(g.data_ptr<float>());
    else
      run(Bits(g));
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

double GradNorm(const std::vector<at::Tensor*>& params) {
  double sq = 0;
  for (at::Tensor* p : params) {
    at::Tensor g = p->grad();
    if (!g.defined()) continue;
    g = g.contiguous();
    if (g.scalar_type() == at::kFloat)
      sq += internal::SumSquares(g.data_ptr<float>(), g.numel());
    else if (g.scalar_type() == at::kBFloat16)
      sq += internal::SumSquares(Bits(g), g.numel());
    else
      sq += g.to(at::kDouble).pow(2).sum().item<double>();
  }
  return std::sqrt(sq);
}

double ClipScale(double norm, double max_norm) {
  return max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0;
}

double ClipGradNorm(const std::vector<at::Tensor*>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  double norm = GradNorm(params);
  double scale = ClipScale(norm, max_norm);
  if (scale != 1.0) {
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
