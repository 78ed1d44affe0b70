// The vectorised optimizer kernels against fp64 ATen references, on sizes
// that exercise the vector bodies, their tails and several threads' chunks.
#include "worker/train/adamw_kernel.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "worker/dist/communicator.h"
#include "worker/train/adamw.h"
#include "worker/train/sharded_adamw.h"

namespace topiary::train {
namespace {

uint16_t* Bits(const at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); }

constexpr int64_t kN = 100'003;  // not a multiple of 16; more than one 16K chunk

TEST(AdamWKernel, EveryTypePairMatchesTheFp64Formula) {
  const internal::AdamWStep s{0.9f, 0.95f, 1e-3f / 0.1f, 1 / 0.05f, 1e-8f, 1 - 1e-3f * 0.1f, 0.5f};
  for (bool bf16_grad : {false, true}) {
    for (bool bf16_weight : {false, true}) {
      at::manual_seed(7);
      at::Tensor g = at::randn({kN}), m = at::randn({kN}) * 0.1, v = at::rand({kN}) * 0.01, master = at::randn({kN});
      if (bf16_grad) g = g.to(at::kBFloat16);
      // fp64 reference
      at::Tensor gd = g.to(at::kDouble) * s.scale;
      at::Tensor md = m.to(at::kDouble) * s.b1 + gd * (1 - s.b1);
      at::Tensor vd = v.to(at::kDouble) * s.b2 + gd * gd * (1 - s.b2);
      at::Tensor pd = master.to(at::kDouble) * s.decay - md * s.lr_bc1 / ((vd * s.inv_bc2).sqrt() + s.eps);
      at::Tensor w = bf16_weight ? at::empty({kN}, at::kBFloat16) : master;
      if (bf16_grad && bf16_weight)
        internal::FusedUpdate(Bits(g), m.data_ptr<float>(), v.data_ptr<float>(), master.data_ptr<float>(), Bits(w), kN,
                              s);
      if (bf16_grad && !bf16_weight)
        internal::FusedUpdate(Bits(g), m.data_ptr<float>(), v.data_ptr<float>(), master.data_ptr<float>(),
                              master.data_ptr<float>(), kN, s);
      if (!bf16_grad && bf16_weight)
        internal::FusedUpdate(g.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), master.data_ptr<float>(),
                              Bits(w), kN, s);
      if (!bf16_grad && !bf16_weight)
        internal::FusedUpdate(g.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), master.data_ptr<float>(),
                              master.data_ptr<float>(), kN, s);
      SCOPED_TRACE(::testing::Message() << "bf16 grad " << bf16_grad << ", bf16 weight " << bf16_weight);
      EXPECT_TRUE(m.to(at::kDouble).allclose(md, 1e-6, 1e-7));
      EXPECT_TRUE(v.to(at::kDouble).allclose(vd, 1e-6, 1e-9));
      EXPECT_TRUE(master.to(at::kDouble).allclose(pd, 1e-6, 1e-6));
      // The bf16 weight is the master rounded as c10::BFloat16 rounds (to nearest even), bit for bit.
      if (bf16_weight) {
        EXPECT_TRUE(w.equal(master.to(at::kBFloat16)));
      }
    }
  }
}

TEST(AdamWKernel, Bf16RoundingTiesAndNaN) {
  // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0);
  // 1 + 3·2^-8 goes up to 1 + 2^-6. NaN stays NaN.
  at::Tensor master = at::tensor(
      {1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8), std::numeric_limits<float>::quiet_NaN(), -3.3f});
  at::Tensor g = at::zeros({4}), m = at::zeros({4}), v = at::zeros({4});
  at::Tensor w = at::empty({4}, at::kBFloat16);
  const internal::AdamWStep s{0.9f, 0.95f, 0.0f, 1.0f, 1e-8f, 1.0f, 1.0f};  // lr 0: the weight is the master
  internal::FusedUpdate(g.data_ptr<float>(), m.data_ptr<float>(), v.data_ptr<float>(), master.data_ptr<float>(),
                        Bits(w), 4, s);
  EXPECT_EQ(w[0].item<float>(), 1.0f);
  EXPECT_EQ(w[1].item<float>(), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(w[2].item<float>()));
  EXPECT_EQ(w[3].item<float>(), at::tensor({-3.3f}).to(at::kBFloat16).item<float>());
}

TEST(AdamWKernel, SumSquaresMatchesFp64) {
  at::manual_seed(3);
  at::Tensor x = at::randn({kN}) * 3;
  const double expect = x.to(at::kDouble).pow(2).sum().item<double>();
  EXPECT_NEAR(internal::SumSquares(x.data_ptr<float>(), kN), expect, 1e-5 * expect);
  at::Tensor xb = x.to(at::kBFloat16);
  const double expect_b = xb.to(at::kDouble).pow(2).sum().item<double>();
  EXPECT_NEAR(internal::SumSquares(Bits(xb), kN), expect_b, 1e-5 * expect_b);
  EXPECT_EQ(internal::SumSquares(x.data_ptr<float>(), 0), 0.0);
}

// One rank of ZeRO-1 updates straight from the gradients; it must equal
// AdamW bit for bit on large bf16 tensors, a parameter without a gradient
// (treated as zero, as on more ranks) included.
TEST(AdamWKernel, OneRankShardedEqualsAdamWOnLargeTensors) {
  at::manual_seed(5);
  at::Tensor w1 = at::randn({317, 331}).to(at::kBFloat16), b1 = at::randn({kN}).to(at::kBFloat16);
  at::Tensor w2 = w1.clone(), b2 = b1.clone();
  for (at::Tensor* t : {&w1, &b1, &w2, &b2}) t->requires_grad_(true);
  AdamW plain({{"w", &w1}, {"b", &b1}}, {});
  auto comm = dist::MakeLocalCommunicator();
  auto sharded = ShardedAdamW::Create({{"w", &w2}, {"b", &b2}}, {}, comm.get());
  ASSERT_TRUE(sharded.ok());
  for (int step = 0; step < 3; ++step) {
    at::Tensor gw = (at::randn({317, 331}) * (step + 1)).to(at::kBFloat16), gb = at::randn({kN}).to(at::kBFloat16);
    w1.mutable_grad() = gw, w2.mutable_grad() = gw.clone();
    if (step == 1) {  // b has no gradient this step
      b1.mutable_grad() = at::zeros({kN}, at::kBFloat16), b2.mutable_grad() = at::Tensor();
    } else {
      b1.mutable_grad() = gb, b2.mutable_grad() = gb.clone();
    }
    const double norm = GradNorm({&w1, &b1});
    plain.Step(1e-2, ClipScale(norm, 50.0));
    auto n2 = (*sharded)->Step(1e-2, 50.0);
    ASSERT_TRUE(n2.ok());
    EXPECT_DOUBLE_EQ(*n2, norm);
  }
  EXPECT_TRUE(w1.equal(w2));
  EXPECT_TRUE(b1.equal(b2));
}

}  // namespace
}  // namespace topiary::train
