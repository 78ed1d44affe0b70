#include "worker/train/adamw.h"
#include "worker/train/adamw_kernel.h"

#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <functional>
#include <tuple>
#include <type_traits>

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
    const float decay = s.decay ? static_cast<float>(1 - lr * options_.weight_decay) : 1.0f;
    const int64_t n = s.master.numel();
    float* m = s.m.data_ptr<float>();
    float* v = s.v.data_ptr<float>();
    float* master = s.master.data_ptr<float>();
    const auto args = std::make_tuple(static_cast<float>(b1), static_cast<float>(b2), static_cast<float>(lr / bc1),
                                      static_cast<float>(1 / bc2), static_cast<float>(options_.eps), decay,
                                      static_cast<float>(grad_scale));
    auto run = [&](auto* gp, auto* wp) {
      std::apply([&](auto... a) { internal::FusedUpdate(gp, m, v, master, wp, n, a...); }, args);
    };
    const bool bf16_weight = s.param->scalar_type() == at::kBFloat16;
    if (g.scalar_type() == at::kFloat) {
      if (bf16_weight) run(g.data_ptr<float>(), s.param->data_ptr<at::BFloat16>());
      else run(g.data_ptr<float>(), master);
    } else if (g.scalar_type() == at::kBFloat16) {
      if (bf16_weight) run(g.data_ptr<at::BFloat16>(), s.param->data_ptr<at::BFloat16>());
      else run(g.data_ptr<at::BFloat16>(), master);
    } else {  // other dtypes (fp16): convert, then the float path
      at::Tensor gf = g.to(at::kFloat);
      at::Tensor pf = s.param->scalar_type() == at::kFloat ? s.master : at::empty_like(s.master);
      run(gf.data_ptr<float>(), pf.data_ptr<float>());
      if (s.param->scalar_type() != at::kFloat) s.param->detach().copy_(s.master);
    }
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
    auto sum_sq = [&](auto* x) {
      return at::parallel_reduce(0, g.numel(), 1 << 14, 0.0, [&](int64_t b, int64_t e, double acc) {
        float local = 0;
        for (int64_t i = b; i < e; ++i) {
          const float f = static_cast<float>(x[i]);
          local += f * f;
        }
        return acc + local;
      }, std::plus<double>());
    };
    if (g.scalar_type() == at::kFloat) sq += sum_sq(g.data_ptr<float>());
    else if (g.scalar_type() == at::kBFloat16) sq += sum_sq(g.data_ptr<at::BFloat16>());
    else sq += g.to(at::kDouble).pow(2).sum().item<double>();
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
