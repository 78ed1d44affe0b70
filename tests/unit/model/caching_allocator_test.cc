#include "worker/model/caching_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace topiary::model {
namespace {

// One test: the allocator is process-wide state.
TEST(CachingCpuAllocator, ReusesLargeBuffersAndLeavesSmallOnesAlone) {
  InstallCachingCpuAllocator();
  InstallCachingCpuAllocator();  // idempotent
  SetCpuCacheLimit(int64_t{1} << 30);
  ReleaseCachedCpuMemory();
  const CpuCacheStats s0 = GetCpuCacheStats();

  // A freed large buffer comes back for the next request of about its size.
  void* first = nullptr;
  {
    at::Tensor a = at::empty({3, 1000, 1000});  // 12 MB
    first = a.data_ptr();
    a.fill_(2.0f);
  }
  CpuCacheStats s1 = GetCpuCacheStats();
  EXPECT_EQ(s1.misses - s0.misses, 1);
  EXPECT_EQ(s1.in_use_bytes, s0.in_use_bytes);
  EXPECT_GE(s1.cached_bytes - s0.cached_bytes, 12'000'000);
  {
    at::Tensor b = at::empty({3, 999, 1000});  // a little smaller: the same block
    EXPECT_EQ(b.data_ptr(), first);
    EXPECT_EQ(GetCpuCacheStats().hits - s1.hits, 1);
    at::Tensor c = at::empty({40, 1000, 1000});  // far larger: not that block
    EXPECT_NE(c.data_ptr(), first);
  }
  // Requests much smaller than a cached block do not take it (waste is capped at 1/8).
  {
    at::Tensor d = at::empty({1, 1000, 1000});
    EXPECT_NE(d.data_ptr(), first);
  }
  // Small tensors go to the default allocator: not counted.
  const CpuCacheStats s2 = GetCpuCacheStats();
  { at::Tensor small = at::ones({1000}); }
  const CpuCacheStats s3 = GetCpuCacheStats();
  EXPECT_EQ(s3.hits + s3.misses, s2.hits + s2.misses);

  // Results computed in reused memory are right.
  at::manual_seed(0);
  at::Tensor x = at::randn({700, 900}), y = at::randn({900, 800});
  at::Tensor expect = at::matmul(x.to(at::kDouble), y.to(at::kDouble));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(at::matmul(x, y).to(at::kDouble).allclose(expect, 1e-4, 1e-3));

  // raw_allocate / raw_deallocate (used inside libtorch) for both sizes.
  c10::Allocator* alloc = c10::GetCPUAllocator();
  for (size_t n : {size_t{100}, size_t{5} << 20}) {
    void* p = alloc->raw_allocate(n);
    ASSERT_NE(p, nullptr);
    static_cast<char*>(p)[n - 1] = 1;
    alloc->raw_deallocate(p);
  }

  // Sizes that never repeat do not pile up: what is mapped stays within 5/4
  // of the peak in use (+64 MiB), where keeping them all would map ~1 GB.
  for (int mb = 10; mb <= 60; mb += 2) {
    at::Tensor t = at::empty({mb * 1000 * 1000 / 4});
    t.fill_(1.0f);
  }
  const CpuCacheStats s4 = GetCpuCacheStats();
  EXPECT_LE(s4.in_use_bytes + s4.cached_bytes, s4.peak_in_use_bytes / 4 * 5 + (int64_t{64} << 20));
  EXPECT_GE(s4.peak_in_use_bytes, 160'000'000);  // the 40-million-float tensor above

  // Past the limit freed buffers are unmapped, not kept.
  SetCpuCacheLimit(0);
  EXPECT_EQ(GetCpuCacheStats().cached_bytes, 0);
  { at::Tensor e = at::empty({4, 1000, 1000}); }
  EXPECT_EQ(GetCpuCacheStats().cached_bytes, 0);
  SetCpuCacheLimit(int64_t{1} << 30);
  ReleaseCachedCpuMemory();
  EXPECT_EQ(GetCpuCacheStats().cached_bytes, 0);
}

}  // namespace
}  // namespace topiary::model
