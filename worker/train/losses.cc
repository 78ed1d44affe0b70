#include "worker/train/losses.h"

#include <torch/torch.h>

namespace topiary::train {

at::Tensor CrossEntropy(const at::Tensor& logits, const at::Tensor& targets) {
  return at::cross_entropy_loss(logits.to(at::kFloat).flatten(0, 1), targets.flatten());
}

KdLoss DistillationLoss(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                        const at::Tensor& targets, const KdOptions& o) {
  const double tau = o.temperature;
  at::Tensor s = student_logits.to(at::kFloat).flatten(0, 1);                // (N, V)
  at::Tensor t = teacher_logits.detach().to(at::kFloat).flatten(0, 1);      // (N, V)
  at::Tensor log_ps = at::log_softmax(tau == 1.0 ? s : s / tau, -1);
  at::Tensor log_pt = at::log_softmax(tau == 1.0 ? t : t / tau, -1);
  at::Tensor kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean();        // KL(p_t ‖ p_s) per token, averaged
  at::Tensor ce = at::cross_entropy_loss(s, targets.flatten());
  KdLoss out;
  out.loss = o.scale_by_t2 ? kl * (tau * tau) : kl;
  if (o.ce_weight > 0) out.loss = out.loss + ce * o.ce_weight;
  out.kl = kl.item<double>();
  out.ce = ce.item<double>();
  return out;
}

at::Tensor HiddenStateLoss(const at::Tensor& student, const at::Tensor& teacher, HiddenLoss kind) {
  at::Tensor s = student.to(at::kFloat), t = teacher.detach().to(at::kFloat);
  if (kind == HiddenLoss::kMse) return (s - t).pow(2).mean();
  return (1 - at::cosine_similarity(s, t, -1, 1e-8)).mean();
}

}  // namespace topiary::train
