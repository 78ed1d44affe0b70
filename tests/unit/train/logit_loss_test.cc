// The fused logit loss (CE, forward KL, their gradient in one pass) against
// plain ATen fp64 references: values and gradients, fp32 and bf16, τ ≠ 1,
// τ² scaling, an α·CE term, rows without a target, a vocabulary that is not
// a multiple of the vector width, large logits and a teacher −∞.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "worker/train/losses.h"

namespace topiary::train {
namespace {

struct Reference {
  double loss, kl, ce;
  at::Tensor grad;  // fp64, the student logits' shape
};

Reference ComputeReference(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& targets,
                           const KdOptions& o, bool kd) {
  at::Tensor s = student.detach().to(at::kDouble).requires_grad_(true);
  const int64_t V = s.size(-1);
  at::Tensor flat = s.reshape({-1, V});
  at::Tensor y = targets.reshape({-1});
  at::Tensor ce = at::cross_entropy_loss(flat, y, {}, at::Reduction::Mean, -100);
  at::Tensor loss = ce;
  Reference r{0, 0, ce.item<double>(), at::Tensor()};
  if (kd) {
    const double tau = o.temperature;
    at::Tensor log_pt = at::log_softmax(teacher.to(at::kDouble).reshape({-1, V}) / tau, -1);
    at::Tensor log_ps = at::log_softmax(flat / tau, -1);
    at::Tensor pt = log_pt.exp();
    at::Tensor kl = at::where(pt > 0, pt * (log_pt - log_ps), at::zeros_like(pt)).sum(-1).mean();
    r.kl = kl.item<double>();
    loss = kl * (o.scale_by_t2 ? tau * tau : 1.0) + ce * o.ce_weight;
  }
  loss.backward();
  r.loss = loss.item<double>();
  r.grad = s.grad();
  return r;
}

void ExpectMatches(const at::Tensor& student_in, const at::Tensor& teacher, const at::Tensor& targets,
                   const KdOptions& o, bool kd, double tol, double grad_tol) {
  at::Tensor student = student_in.detach().clone().requires_grad_(true);
  Reference ref = ComputeReference(student, teacher, targets, o, kd);
  at::Tensor loss;
  double kl = 0, ce = 0;
  if (kd) {
    KdLoss got = DistillationLoss(student, teacher, targets, o);
    loss = got.loss, kl = got.kl, ce = got.ce;
    EXPECT_NEAR(kl, ref.kl, tol * (1 + std::fabs(ref.kl)));
    EXPECT_NEAR(ce, ref.ce, tol * (1 + std::fabs(ref.ce)));
  } else {
    loss = CrossEntropy(student, targets);
  }
  EXPECT_NEAR(loss.item<double>(), ref.loss, tol * (1 + std::fabs(ref.loss)));
  (loss * 3.0).backward();  // the incoming gradient scales the saved one
  ASSERT_TRUE(student.grad().defined());
  EXPECT_EQ(student.grad().scalar_type(), student.scalar_type());
  EXPECT_EQ(student.grad().sizes(), student.sizes());
  // Gradient error relative to the largest gradient entry.
  const double err = (student.grad().to(at::kDouble) - ref.grad * 3.0).abs().max().item<double>();
  EXPECT_LE(err, grad_tol * (ref.grad * 3.0).abs().max().item<double>()) << "largest gradient error";
}

TEST(LogitLoss, MatchesTheFp64ReferenceInFp32AndBf16) {
  at::manual_seed(11);
  const int64_t B = 3, T = 7, V = 1003;  // 1003: vector bodies and tails
  at::Tensor s = at::randn({B, T, V}) * 4, t = at::randn({B, T, V}) * 4;
  at::Tensor y = at::randint(0, V, {B, T}, at::kLong);
  y[0][2] = -100;  // a row without a target: no CE term, still a KL term
  KdOptions plain, tau2, mixed;
  tau2.temperature = 2.0, tau2.scale_by_t2 = true;
  mixed.temperature = 0.7, mixed.ce_weight = 0.3;
  // fp32: values to 1e-5 relative, gradients to 1e-5 of the largest entry.
  ExpectMatches(s, t, y, plain, /*kd=*/false, 1e-5, 1e-5);
  for (const KdOptions& o : {plain, tau2, mixed}) ExpectMatches(s, t, y, o, /*kd=*/true, 1e-5, 1e-5);
  // bf16 logits: the reference reads the same bf16 values; the gradient is
  // rounded to bf16 twice (the kernel's output, then backward's ×3): half an
  // ulp (2^-9) each, so within 2^-7 of the largest entry.
  at::Tensor sb = s.to(at::kBFloat16), tb = t.to(at::kBFloat16);
  ExpectMatches(sb, tb, y, plain, /*kd=*/false, 1e-5, 1.0 / 128);
  for (const KdOptions& o : {plain, tau2, mixed}) ExpectMatches(sb, tb, y, o, /*kd=*/true, 1e-5, 1.0 / 128);
}

TEST(LogitLoss, LargeLogitsATeacherMinusInfinityAndNaN) {
  const int64_t V = 37;
  at::Tensor s = at::linspace(-80, 80, V).view({1, 1, V});
  at::Tensor t = at::linspace(60, -60, V).view({1, 1, V});
  t[0][0][5] = -std::numeric_limits<float>::infinity();  // a token the teacher rules out
  at::Tensor y = at::full({1, 1}, 3, at::kLong);
  KdOptions o;
  o.ce_weight = 1;
  ExpectMatches(s, t, y, o, /*kd=*/true, 1e-5, 1e-5);
  // A NaN logit makes the loss NaN (the trainer stops on it), never a number.
  at::Tensor bad = s.clone();
  bad[0][0][9] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(CrossEntropy(bad, y).item<double>()));
  EXPECT_TRUE(std::isnan(DistillationLoss(bad, t, y, o).kl));
}

TEST(LogitLoss, NoGradientWorkWithoutGradModeAndBadTargetsAreRefused) {
  at::Tensor s = at::randn({2, 4, 50}).requires_grad_(true);
  at::Tensor y = at::randint(0, 50, {2, 4}, at::kLong);
  {
    torch::NoGradGuard g;
    at::Tensor loss = CrossEntropy(s, y);
    EXPECT_FALSE(loss.requires_grad());
  }
  EXPECT_TRUE(CrossEntropy(s, y).requires_grad());
  EXPECT_THROW(CrossEntropy(s, at::full({2, 4}, 50, at::kLong)), c10::Error);
  EXPECT_THROW(CrossEntropy(s, at::zeros({3}, at::kLong)), c10::Error);
}

}  // namespace
}  // namespace topiary::train
