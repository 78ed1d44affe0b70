#include "worker/train/losses.h"

#include <torch/torch.h>

#include "worker/train/logit_loss_kernel.h"

namespace topiary::train {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// loss = kl_weight · mean KL + ce_weight · mean CE (over rows with a target),
// with the stats {kl mean, ce mean} as two more outputs that carry no
// gradient. The gradient for the student logits is computed in forward by
// the fused kernel (when they require one) and only scaled in backward.
class FusedLogitLoss : public torch::autograd::Function<FusedLogitLoss> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& student, const at::Tensor& teacher,
                               const at::Tensor& targets, double tau, double kl_weight, double ce_weight,
                               bool need_grad) {
    const int64_t V = student.size(-1);
    const bool has_teacher = teacher.numel() > 0;  // empty: CE only (apply takes no undefined tensors)
    const bool bf16 =
        student.scalar_type() == at::kBFloat16 && (!has_teacher || teacher.scalar_type() == at::kBFloat16);
    const at::ScalarType dt = bf16 ? at::kBFloat16 : at::kFloat;
    at::Tensor s = student.reshape({-1, V}).to(dt).contiguous();  // (N, V)
    at::Tensor t = has_teacher ? teacher.reshape({-1, V}).to(dt).contiguous() : at::Tensor();
    at::Tensor y = targets.reshape({-1}).to(at::kLong).contiguous();  // (N)
    const int64_t N = s.size(0);
    TORCH_CHECK(y.numel() == N, "logit loss: ", y.numel(), " targets for ", N, " rows of logits");
    TORCH_CHECK(!t.defined() || t.size(0) == N, "logit loss: teacher logits of another shape");
    // Targets must index the vocabulary (negative: no CE term for that row).
    TORCH_CHECK(N == 0 || y.max().item<int64_t>() < V, "logit loss: a target is outside the vocabulary of ", V);
    const int64_t counted = N == 0 ? 0 : y.ge(0).sum().item<int64_t>();
    at::Tensor kl = at::zeros({N}, at::kDouble), ce = at::zeros({N}, at::kDouble);
    at::Tensor grad = need_grad ? at::empty({N, V}, s.options()) : at::Tensor();
    internal::LogitLossArgs a;
    a.rows = N, a.vocab = V, a.bf16 = bf16;
    a.s = s.data_ptr(), a.t = t.defined() ? t.data_ptr() : nullptr;
    a.targets = y.data_ptr<int64_t>();
    a.tau = static_cast<float>(tau);
    a.grad = need_grad ? grad.data_ptr() : nullptr;
    a.kl_coef = N > 0 ? static_cast<float>(kl_weight / N) : 0.0f;
    a.ce_coef = counted > 0 ? static_cast<float>(ce_weight / counted) : 0.0f;
    a.kl = kl.data_ptr<double>(), a.ce = ce.data_ptr<double>();
    internal::LogitLoss(a);
    const double kl_mean = N > 0 ? kl.sum().item<double>() / N : 0.0;
    const double ce_mean = counted > 0 ? ce.sum().item<double>() / counted : 0.0;
    if (need_grad) ctx->save_for_backward({grad.view(student.sizes()).to(student.scalar_type())});
    at::Tensor loss = at::scalar_tensor(kl_weight * kl_mean + ce_weight * ce_mean, at::kFloat);
    at::Tensor kl_out = at::scalar_tensor(kl_mean, at::kDouble), ce_out = at::scalar_tensor(ce_mean, at::kDouble);
    ctx->mark_non_differentiable({kl_out, ce_out});
    return {loss, kl_out, ce_out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    at::Tensor g = ctx->get_saved_variables()[0];
    const at::Tensor& up = grad_outputs[0];  // d(total)/d(loss), a scalar
    if (!(up.defined() && up.item<double>() == 1.0)) g = up.defined() ? g * up.to(g.scalar_type()) : at::zeros_like(g);
    return {g, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

variable_list ApplyLogitLoss(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& targets,
                             double tau, double kl_weight, double ce_weight) {
  const bool need_grad = at::GradMode::is_enabled() && student.requires_grad();
  return FusedLogitLoss::apply(student, teacher.defined() ? teacher.detach() : at::empty({0}), targets, tau, kl_weight,
                               ce_weight, need_grad);
}

}  // namespace

at::Tensor CrossEntropy(const at::Tensor& logits, const at::Tensor& targets) {
  return ApplyLogitLoss(logits, at::Tensor(), targets, 1.0, 0.0, 1.0)[0];
}

KdLoss DistillationLoss(const at::Tensor& student_logits, const at::Tensor& teacher_logits, const at::Tensor& targets,
                        const KdOptions& o) {
  const double tau = o.temperature;
  const double kl_weight = o.kl_weight * (o.scale_by_t2 ? tau * tau : 1.0);
  variable_list r = ApplyLogitLoss(student_logits, teacher_logits, targets, tau, kl_weight, o.ce_weight);
  KdLoss out;
  out.loss = r[0];
  out.kl = r[1].item<double>();
  out.ce = r[2].item<double>();
  return out;
}

at::Tensor HiddenStateLoss(const at::Tensor& student, const at::Tensor& teacher, HiddenLoss kind) {
  at::Tensor s = student.to(at::kFloat), t = teacher.detach().to(at::kFloat);
  if (kind == HiddenLoss::kMse) return (s - t).pow(2).mean();
  return (1 - at::cosine_similarity(s, t, -1, 1e-8)).mean();
}

}  // namespace topiary::train
