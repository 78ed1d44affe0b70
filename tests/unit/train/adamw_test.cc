#include "worker/train/adamw.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace topiary::train {
namespace {

TEST(AdamW, OneStepMatchesHandComputation) {
  at::Tensor w = torch::tensor({{1.0f, -2.0f}, {0.5f, 3.0f}}).requires_grad_(true);
  at::Tensor b = at::tensor({0.25f}).requires_grad_(true);
  w.mutable_grad() = torch::tensor({{0.1f, -0.2f}, {0.0f, 0.4f}});
  b.mutable_grad() = at::tensor({1.0f});
  AdamWOptions o;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.eps = 1e-8;
  o.weight_decay = 0.1;
  AdamW opt({{"w", &w}, {"b", &b}}, o);
  const double lr = 0.01;
  opt.Step(lr);
  // Step 1: m = (1-b1) g, v = (1-b2) g^2; mhat = g, vhat = g^2; update = g/(|g|+eps).
  auto expect = [&](double p, double g, bool decay) {
    double p2 = decay ? p * (1 - lr * 0.1) : p;
    return p2 - lr * (g / (std::fabs(g) + 1e-8));
  };
  EXPECT_NEAR(w[0][0].item<double>(), expect(1.0, 0.1, true), 1e-6);
  EXPECT_NEAR(w[0][1].item<double>(), expect(-2.0, -0.2, true), 1e-6);
  EXPECT_NEAR(w[1][0].item<double>(), 0.5 * (1 - lr * 0.1), 1e-6);   // zero gradient: decay only
  EXPECT_NEAR(b[0].item<double>(), expect(0.25, 1.0, false), 1e-6);  // no decay on vectors
}

TEST(AdamW, Bf16WeightsKeepFp32Master) {
  at::Tensor w = at::full({4}, 1.0f, at::kBFloat16).requires_grad_(true);
  AdamWOptions o;
  o.weight_decay = 0;
  AdamW opt({{"w", &w}}, o);
  // Updates of 1e-4 are below bf16 resolution at 1.0 (2^-7); the master copy
  // accumulates them until the rounded weight moves.
  for (int i = 0; i < 200; ++i) {
    w.mutable_grad() = at::full({4}, 1.0f, at::kBFloat16);
    opt.Step(1e-4);
  }
  EXPECT_LT(w[0].item<float>(), 0.985f);
  EXPECT_EQ(opt.StateBytes(), 4 * 4 * 3);
}

TEST(Schedule, WarmupThenCosine) {
  EXPECT_NEAR(CosineLr(0, 100, 10, 1.0, 0.1), 0.1, 1e-12);
  EXPECT_NEAR(CosineLr(9, 100, 10, 1.0, 0.1), 1.0, 1e-12);
  EXPECT_NEAR(CosineLr(10, 100, 10, 1.0, 0.1), 1.0, 1e-12);
  EXPECT_NEAR(CosineLr(55, 100, 10, 1.0, 0.1), 0.55, 1e-12);
  EXPECT_NEAR(CosineLr(100, 100, 10, 1.0, 0.1), 0.1, 1e-12);
}

TEST(ClipGradNorm, ScalesToMaxNorm) {
  at::Tensor a = at::zeros({2}).requires_grad_(true), b = at::zeros({1}).requires_grad_(true);
  a.mutable_grad() = at::tensor({3.0f, 0.0f});
  b.mutable_grad() = at::tensor({4.0f});
  EXPECT_NEAR(ClipGradNorm({&a, &b}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(a.grad()[0].item<float>(), 0.6f, 1e-5);
  EXPECT_NEAR(b.grad()[0].item<float>(), 0.8f, 1e-5);
}

}  // namespace
}  // namespace topiary::train
