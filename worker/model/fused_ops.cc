#include "worker/model/fused_ops.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <limits>

#include "worker/model/fused_kernels.h"

namespace topiary::model {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool Fusable(const Tensor& t) { return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16; }
bool Bf16(const Tensor& t) { return t.scalar_type() == at::kBFloat16; }

class CausalSoftmaxFn : public torch::autograd::Function<CausalSoftmaxFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& scores, double scale) {
    Tensor x = scores.contiguous();
    const int64_t T = x.size(-1);
    Tensor y = at::empty_like(x);
    kernels::CausalSoftmaxForward(x.data_ptr(), y.data_ptr(), Bf16(x), x.numel() / T, T, static_cast<float>(scale));
    ctx->save_for_backward({y});
    ctx->saved_data["scale"] = scale;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Tensor p = ctx->get_saved_variables()[0];
    Tensor g = grads[0].to(p.scalar_type()).contiguous();
    const int64_t T = p.size(-1);
    Tensor dx = at::empty_like(p);
    kernels::CausalSoftmaxBackward(g.data_ptr(), p.data_ptr(), dx.data_ptr(), Bf16(p), p.numel() / T, T,
                                   static_cast<float>(ctx->saved_data["scale"].toDouble()));
    return {dx, Tensor()};
  }
};

class SwiGluFn : public torch::autograd::Function<SwiGluFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& gate_in, const Tensor& up_in) {
    Tensor gate = gate_in.contiguous(), up = up_in.contiguous();
    Tensor a = at::empty_like(gate);
    kernels::SwiGluForward(gate.data_ptr(), up.data_ptr(), a.data_ptr(), Bf16(gate), gate.numel());
    ctx->save_for_backward({gate, up});
    return a;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor& gate = saved[0];
    const Tensor& up = saved[1];
    Tensor da = grads[0].to(gate.scalar_type()).contiguous();
    Tensor dg = at::empty_like(gate), du = at::empty_like(up);
    kernels::SwiGluBackward(da.data_ptr(), gate.data_ptr(), up.data_ptr(), dg.data_ptr(), du.data_ptr(), Bf16(gate),
                            gate.numel());
    return {dg, du};
  }
};

class RmsNormFn : public torch::autograd::Function<RmsNormFn> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x_in, const Tensor& weight, double eps) {
    Tensor x = x_in.contiguous(), w = weight.contiguous();
    const int64_t C = x.size(-1), rows = x.numel() / C;
    Tensor y = at::empty_like(x);
    Tensor r = at::empty({rows}, x.options().dtype(at::kFloat));
    kernels::RmsNormForward(x.data_ptr(), w.data_ptr(), y.data_ptr(), r.data_ptr<float>(), Bf16(x), rows, C,
                            static_cast<float>(eps));
    ctx->save_for_backward({x, w, r});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& w = saved[1];
    const Tensor& r = saved[2];
    Tensor dy = grads[0].to(x.scalar_type()).contiguous();
    const int64_t C = x.size(-1), rows = x.numel() / C;
    Tensor dx = at::empty_like(x);
    Tensor dw = at::empty({C}, x.options().dtype(at::kFloat));
    kernels::RmsNormBackward(dy.data_ptr(), x.data_ptr(), w.data_ptr(), r.data_ptr<float>(), dx.data_ptr(),
                             dw.data_ptr<float>(), Bf16(x), rows, C);
    return {dx, dw.to(w.scalar_type()), Tensor()};
  }
};

}  // namespace

Tensor CausalSoftmax(const Tensor& scores, double scale) {
  if (Fusable(scores)) return CausalSoftmaxFn::apply(scores, scale);
  const int64_t rows = scores.size(-2), T = scores.size(-1);
  Tensor query = at::arange(rows, at::kLong).remainder(T).unsqueeze(1);  // row r is query r mod T
  Tensor above = at::arange(T, at::kLong).unsqueeze(0) > query;          // (rows, T)
  Tensor mask = at::zeros({rows, T}, at::kFloat).masked_fill_(above, -std::numeric_limits<float>::infinity());
  return at::softmax(scores.to(at::kFloat) * scale + mask, -1).to(scores.scalar_type());
}

Tensor SwiGlu(const Tensor& gate, const Tensor& up) {
  if (Fusable(gate) && gate.scalar_type() == up.scalar_type() && gate.sizes() == up.sizes()) {
    return SwiGluFn::apply(gate, up);
  }
  return at::silu(gate) * up;
}

Tensor FusedRmsNorm(const Tensor& x, const Tensor& weight, double eps) {
  if (Fusable(x) && weight.scalar_type() == x.scalar_type() && weight.dim() == 1 && weight.size(0) == x.size(-1)) {
    return RmsNormFn::apply(x, weight, eps);
  }
  Tensor xf = x.to(at::kFloat);
  Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

bool NativeBf16Gemm() {
  static const bool native = [] {
    const char* env = std::getenv("TOPIARY_BF16_GEMM");
    if (env != nullptr && std::string(env) == "fp32") return false;
    if (env != nullptr && std::string(env) == "native") return true;
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
#else
    return true;
#endif
  }();
  return native;
}

namespace {
at::Tensor Wide(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; }
}  // namespace

at::Tensor LinearRouted(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, bool via_fp32) {
  if (!(via_fp32 && x.defined() && Bf16(x) && w.defined() && Bf16(w) && x.device().is_cpu() && w.dim() == 2)) {
    return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
  }
  // The weight widens a slice of rows at a time (at most 8M elements, 32 MB),
  // so a large matrix (an 8B model's lm_head) is never held twice whole.
  const at::Tensor x32 = Wide(x);
  const int64_t rows = w.size(0), step = std::max<int64_t>(1, (int64_t{8} << 20) / std::max<int64_t>(1, w.size(1)));
  std::vector<at::Tensor> parts;
  for (int64_t r = 0; r < rows; r += step) {
    const int64_t n = std::min(step, rows - r);
    const at::Tensor ws = Wide(w.narrow(0, r, n)), bs = b.defined() ? Wide(b.narrow(0, r, n)) : at::Tensor();
    parts.push_back((bs.defined() ? at::linear(x32, ws, bs) : at::linear(x32, ws)).to(at::kBFloat16));
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts, -1);
}

at::Tensor MatMulRouted(const at::Tensor& a, const at::Tensor& b, bool via_fp32) {
  if (via_fp32 && a.defined() && Bf16(a) && b.defined() && Bf16(b) && a.device().is_cpu())
    return at::matmul(Wide(a), Wide(b)).to(at::kBFloat16);
  return at::matmul(a, b);
}

at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return LinearRouted(x, w, b, !NativeBf16Gemm());
}

at::Tensor MatMul(const at::Tensor& a, const at::Tensor& b) { return MatMulRouted(a, b, !NativeBf16Gemm()); }

}  // namespace topiary::model
