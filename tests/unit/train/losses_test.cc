#include "worker/train/losses.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "testing/test_util.h"
#include "worker/dist/communicator.h"
#include "worker/train/sharded_adamw.h"

namespace topiary::train {
namespace {

// One token, vocabulary 2: teacher logits (0, ln 3) -> p_t = (1/4, 3/4);
// student logits (0, 0) -> p_s = (1/2, 1/2).
// KL = 1/4 ln(1/2) + 3/4 ln(3/2); CE on target 1 = ln 2.
TEST(Losses, DistillationMatchesHandComputation) {
  at::Tensor s = torch::tensor({0.0f, 0.0f}).view({1, 1, 2}).requires_grad_(true);
  at::Tensor t = torch::tensor({0.0f, static_cast<float>(std::log(3.0))}).view({1, 1, 2});
  at::Tensor y = torch::tensor({1}, at::kLong).view({1, 1});
  const double kl = 0.25 * std::log(0.5) + 0.75 * std::log(1.5);
  KdLoss a = DistillationLoss(s, t, y, {});
  EXPECT_NEAR(a.kl, kl, 1e-6);
  EXPECT_NEAR(a.loss.item<double>(), kl, 1e-6);
  EXPECT_NEAR(a.ce, std::log(2.0), 1e-6);
  a.loss.backward();  // d KL / d s = p_s - p_t = (1/4, -1/4)
  EXPECT_TRUE(s.grad().view(-1).allclose(torch::tensor({0.25f, -0.25f}), 1e-5, 1e-6));

  KdOptions o;
  o.ce_weight = 0.5;
  EXPECT_NEAR(DistillationLoss(s, t, y, o).loss.item<double>(), kl + 0.5 * std::log(2.0), 1e-6);
  // τ = 2: p_t ∝ (1, sqrt 3); p_s stays uniform; τ² scaling multiplies by 4.
  o = KdOptions();
  o.temperature = 2;
  o.scale_by_t2 = true;
  const double q = 1 / (1 + std::sqrt(3.0)), k2 = q * std::log(2 * q) + (1 - q) * std::log(2 * (1 - q));
  KdLoss b = DistillationLoss(s, t, y, o);
  EXPECT_NEAR(b.kl, k2, 1e-6);
  EXPECT_NEAR(b.loss.item<double>(), 4 * k2, 1e-6);
  // Identical logits: zero KL.
  EXPECT_NEAR(DistillationLoss(t, t, y, {}).kl, 0.0, 1e-7);
}

// With one rank, ZeRO-1 is plain AdamW: same weights after a few steps,
// including clipping, weight decay on matrices only and bf16 weights.
TEST(ShardedAdamW, OneRankEqualsAdamW) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    at::manual_seed(0);
    at::Tensor w1 = at::randn({6, 5}).to(dtype), b1 = at::randn({7}).to(dtype);
    at::Tensor w2 = w1.clone(), b2 = b1.clone();
    for (at::Tensor* t : {&w1, &b1, &w2, &b2}) t->requires_grad_(true);
    AdamWOptions opt;
    opt.weight_decay = 0.1;
    AdamW plain({{"w", &w1}, {"b", &b1}}, opt);
    auto comm = dist::MakeLocalCommunicator();
    auto sharded = ShardedAdamW::Create({{"w", &w2}, {"b", &b2}}, opt, comm.get());
    ASSERT_TRUE(sharded.ok()) << sharded.status();
    for (int step = 0; step < 4; ++step) {
      at::Tensor gw = at::randn({6, 5}) * (step + 1), gb = at::randn({7});
      w1.mutable_grad() = gw.to(dtype), b1.mutable_grad() = gb.to(dtype);
      w2.mutable_grad() = gw.to(dtype), b2.mutable_grad() = gb.to(dtype);
      const double norm = GradNorm({&w1, &b1});
      plain.Step(1e-2, ClipScale(norm, 2.0));
      auto n2 = (*sharded)->Step(1e-2, 2.0);
      ASSERT_TRUE(n2.ok());
      EXPECT_NEAR(*n2, norm, 1e-4 * norm);
    }
    const double tol = dtype == at::kFloat ? 1e-6 : 1e-2;
    EXPECT_TRUE(w1.to(at::kFloat).allclose(w2.to(at::kFloat), tol, tol)) << dtype;
    EXPECT_TRUE(b1.to(at::kFloat).allclose(b2.to(at::kFloat), tol, tol)) << dtype;
    EXPECT_EQ((*sharded)->StateBytes(), 3 * 4 * (30 + 7));
  }
}

TEST(ShardedAdamW, RefusesAShardOfAnotherShape) {
  at::Tensor w = at::randn({4, 4}).requires_grad_(true);
  auto comm = dist::MakeLocalCommunicator();
  auto o = ShardedAdamW::Create({{"w", &w}}, {}, comm.get());
  ASSERT_TRUE(o.ok());
  std::map<std::string, at::Tensor> bad = {{"master", at::zeros({3})}, {"m", at::zeros({3})}, {"v", at::zeros({3})}};
  absl::Status st = (*o)->LoadShardState(bad, 1);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("world size"), std::string::npos);
}

}  // namespace
}  // namespace topiary::train
