// The NCCL backend on a real GPU (label `gpu`: scripts/test excludes it; the
// device script runs it). One rank per GPU; with one GPU the world is 1, which
// still runs the unique-id rendezvous, non-blocking init and every collective
// through NCCL kernels.
#include "worker/dist/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <vector>

#include "testing/test_util.h"

namespace topiary::dist {
namespace {

TEST(NcclComm, CollectivesOnDeviceBuffers) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) GTEST_SKIP() << "no CUDA device";
  testing::TempDir dir;
  auto r = OpenFileRendezvous(dir.path());
  ASSERT_TRUE(r.ok());
  NcclOptions o;
  o.timeout = absl::Seconds(60);
  auto c = CreateNcclComm(r->get(), o);
  ASSERT_TRUE(c.ok()) << c.status();
  const size_t n = 1 << 20;
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>(i % 1000);
  float *a = nullptr, *b = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&a), n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&b), n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(a, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE((*c)->AllReduce(a, b, n, NcclType::kF32, ReduceOp::kSum).ok());
  ASSERT_TRUE((*c)->AllGather(b, a, n, NcclType::kF32).ok());
  ASSERT_TRUE((*c)->Broadcast(a, n, NcclType::kF32, 0).ok());
  ASSERT_TRUE((*c)->Barrier().ok());
  std::vector<float> back(n);
  ASSERT_EQ(cudaMemcpy(back.data(), a, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, host);
  EXPECT_TRUE(absl::IsInvalidArgument((*c)->Broadcast(a, n, NcclType::kF32, 1)));
  cudaFree(a);
  cudaFree(b);
}

}  // namespace
}  // namespace topiary::dist
