// Training losses (docs/design.md, "The algorithms"), on logits of shape (B, T, V):
//   CE:  mean over tokens of −log softmax(s)[target].
//   KD:  forward KL from the teacher, Minitron's best: (1/N) Σ_t
//        KL(softmax(t/τ) ‖ softmax(s/τ)), times τ² when `scale_by_t2`,
//        plus α·CE when `ce_weight` α > 0.
//   Hidden states (B, T, C): cosine, mean over tokens of 1 − cos(s, t); or
//        MSE, mean over tokens and channels of (s − t)².
// Computed in fp32 whatever the logits' dtype, in one fused pass per row that
// also produces the gradient (logit_loss_kernel.h); a negative target gives
// its row no CE term (CE is the mean over rows with a target), and a target
// outside the vocabulary is an error. Pure functions.
#pragma once

#include <ATen/core/Tensor.h>

namespace topiary::train {

struct KdOptions {
  double temperature = 1.0;  // τ
  bool scale_by_t2 = false;  // multiply the KL by τ² (Hinton et al.)
  double ce_weight = 0.0;    // α
  double kl_weight = 1.0;    // weight of the KL term (before τ²)
};

struct KdLoss {
  at::Tensor loss;  // scalar, differentiable w.r.t. the student logits
  double kl = 0;    // the KL term (before τ² and without CE)
  double ce = 0;    // the student's CE on the targets (always reported)
};

at::Tensor CrossEntropy(const at::Tensor& logits, const at::Tensor& targets);

// `teacher_logits` carry no gradient.
KdLoss DistillationLoss(const at::Tensor& student_logits, const at::Tensor& teacher_logits, const at::Tensor& targets,
                        const KdOptions& options);

enum class HiddenLoss { kCosine, kMse };

// `teacher` carries no gradient; both of shape (..., C).
at::Tensor HiddenStateLoss(const at::Tensor& student, const at::Tensor& teacher, HiddenLoss kind);

}  // namespace topiary::train
