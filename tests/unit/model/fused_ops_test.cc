// The fused block operations against the unfused expressions in fp64:
// values and gradients, fp32 and bf16, sizes that are not multiples of the
// vector width, and the plain-ATen fallback for other dtypes.
#include "worker/model/fused_ops.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>
#include <vector>

namespace topiary::model {
namespace {

using at::Tensor;
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs `fused` on inputs of `dtype` and `reference` on the same values in
// fp64; compares outputs and the gradients of Σ out ⊙ probe, each relative
// to its largest entry.
void Compare(const Fn& fused, const Fn& reference, std::vector<Tensor> inputs, at::ScalarType dtype, double tol) {
  std::vector<Tensor> a, b;
  for (const Tensor& t : inputs) {
    a.push_back(t.to(dtype).detach().requires_grad_(true));
    b.push_back(a.back().detach().to(at::kDouble).requires_grad_(true));
  }
  Tensor out = fused(a), expect = reference(b);
  ASSERT_EQ(out.scalar_type(), dtype);
  ASSERT_EQ(out.sizes(), expect.sizes());
  auto rel = [](const Tensor& x, const Tensor& y) {
    return (x.to(at::kDouble) - y).abs().max().item<double>() / (y.abs().max().item<double>() + 1e-30);
  };
  EXPECT_LE(rel(out.detach(), expect.detach()), tol) << "output";
  Tensor probe = at::randn(out.sizes(), at::kDouble);
  (out * probe.to(dtype)).sum().backward();
  (expect * probe.to(dtype).to(at::kDouble)).sum().backward();
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(a[i].grad().defined()) << "input " << i;
    EXPECT_EQ(a[i].grad().scalar_type(), dtype);
    EXPECT_LE(rel(a[i].grad(), b[i].grad()), tol) << "gradient of input " << i;
  }
}

// bf16 GEMMs on a CPU without a native bf16 GEMM go through fp32: the same
// numbers as bf16 with fp32 accumulation, values and gradients, with and
// without a bias, a weight large enough to be widened in two slices, and
// the batched matmul of attention. Both routes are checked on any CPU.
TEST(FusedOps, Bf16GemmRoutes) {
  at::manual_seed(3);
  Fn reference_linear = [](const std::vector<Tensor>& x) { return at::linear(x[0], x[1], x[2]); };
  Fn reference_nobias = [](const std::vector<Tensor>& x) { return at::linear(x[0], x[1]); };
  Fn reference_matmul = [](const std::vector<Tensor>& x) { return at::matmul(x[0], x[1]); };
  for (bool via_fp32 : {true, false}) {
    SCOPED_TRACE(via_fp32 ? "via fp32" : "native");
    Fn linear = [&](const std::vector<Tensor>& x) { return LinearRouted(x[0], x[1], x[2], via_fp32); };
    Fn nobias = [&](const std::vector<Tensor>& x) { return LinearRouted(x[0], x[1], Tensor(), via_fp32); };
    Fn matmul = [&](const std::vector<Tensor>& x) { return MatMulRouted(x[0], x[1], via_fp32); };
    Compare(linear, reference_linear, {at::randn({2, 5, 96}), at::randn({40, 96}), at::randn({40})}, at::kBFloat16,
            1.0 / 64);
    Compare(nobias, reference_nobias, {at::randn({3, 96}), at::randn({40, 96})}, at::kBFloat16, 1.0 / 64);
    Compare(matmul, reference_matmul, {at::randn({2, 3, 17, 8}), at::randn({2, 3, 8, 17})}, at::kBFloat16, 1.0 / 64);
    Compare(linear, reference_linear, {at::randn({2, 1, 96}), at::randn({40, 96}), at::randn({40})}, at::kFloat, 1e-5);
  }
  // 1100 x 8000 = 8.8M elements: widened in two slices of rows.
  Fn wide = [&](const std::vector<Tensor>& x) { return LinearRouted(x[0], x[1], x[2], true); };
  Compare(wide, reference_linear, {at::randn({1, 3, 8000}), at::randn({1100, 8000}) * 0.02, at::randn({1100})},
          at::kBFloat16, 1.0 / 64);
}

TEST(FusedOps, CausalSoftmax) {
  at::manual_seed(1);
  const double scale = 1 / std::sqrt(40.0);
  Fn fused = [&](const std::vector<Tensor>& x) { return CausalSoftmax(x[0], scale); };
  Fn reference = [&](const std::vector<Tensor>& x) {  // rows stacked R times: row r is query r mod T
    const int64_t T = x[0].size(-1), R = x[0].size(-2) / T;
    Tensor mask = at::full({T, T}, -std::numeric_limits<double>::infinity(), x[0].options()).triu(1).repeat({R, 1});
    return at::softmax(x[0] * scale + mask, -1);
  };
  Tensor scores = at::randn({2, 3, 37, 37}) * 6;
  Compare(fused, reference, {scores}, at::kFloat, 1e-5);
  Compare(fused, reference, {scores}, at::kBFloat16, 1.0 / 64);
  // Exactly zero above the diagonal; the first query attends to itself only.
  Tensor p = CausalSoftmax(scores, scale);
  EXPECT_EQ(p.triu(1).abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(p.select(-2, 0).select(-1, 0).eq(1).all().item<bool>());
  // Other dtypes take the ATen expression (statistics in fp32, as Hugging Face).
  Compare(fused, reference, {scores}, at::kDouble, 1e-6);
  // Three query heads of a KV group stacked along time (as Attention does).
  Tensor stacked = at::randn({2, 2, 3 * 37, 37}) * 6;
  Compare(fused, reference, {stacked}, at::kFloat, 1e-5);
  Compare(fused, reference, {stacked}, at::kBFloat16, 1.0 / 64);
  Compare(fused, reference, {stacked}, at::kDouble, 1e-6);
}

TEST(FusedOps, SwiGlu) {
  at::manual_seed(2);
  Fn fused = [](const std::vector<Tensor>& x) { return SwiGlu(x[0], x[1]); };
  Fn reference = [](const std::vector<Tensor>& x) { return x[0] * at::sigmoid(x[0]) * x[1]; };
  Tensor gate = at::randn({3, 5, 101}) * 5, up = at::randn({3, 5, 101});
  gate[0][0][0] = 95.0f, gate[0][0][1] = -95.0f;  // σ must not overflow
  Compare(fused, reference, {gate, up}, at::kFloat, 1e-5);
  Compare(fused, reference, {gate, up}, at::kBFloat16, 1.0 / 64);
  Compare(fused, reference, {gate, up}, at::kDouble, 1e-12);
}

TEST(FusedOps, RmsNormKeepsHuggingFaceRounding) {
  at::manual_seed(3);
  const double eps = 1e-5;
  Fn fused = [&](const std::vector<Tensor>& x) { return FusedRmsNorm(x[0], x[1], eps); };
  Fn reference = [&](const std::vector<Tensor>& x) {
    return x[1] * (x[0] * at::rsqrt(x[0].pow(2).mean(-1, true) + eps));
  };
  Tensor x = at::randn({4, 9, 203}) * 3, w = at::rand({203}) + 0.5;
  Compare(fused, reference, {x, w}, at::kFloat, 1e-5);
  Compare(fused, reference, {x, w}, at::kBFloat16, 1.0 / 64);
  Compare(fused, reference, {x, w}, at::kDouble, 1e-6);  // ATen fallback, fp32 statistics
  // bf16: exactly Hugging Face's value, w · bf16(x · r) rounded once more.
  Tensor xb = x.to(at::kBFloat16), wb = w.to(at::kBFloat16);
  Tensor xf = xb.to(at::kFloat);
  Tensor hf = wb * (xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps)).to(at::kBFloat16);
  EXPECT_LE((FusedRmsNorm(xb, wb, eps).to(at::kFloat) - hf.to(at::kFloat)).abs().max().item<float>(),
            hf.to(at::kFloat).abs().max().item<float>() / 128);
}

}  // namespace
}  // namespace topiary::model
