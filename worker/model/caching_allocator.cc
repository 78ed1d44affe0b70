#include "worker/model/caching_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>
#include <vector>

namespace topiary::model {
namespace {

constexpr size_t kMinCached = size_t{1} << 20;  // below this: the default allocator
constexpr size_t kHuge = size_t{2} << 20;       // sizes round up to huge pages
constexpr int64_t kSlack = int64_t{64} << 20;   // mapped beyond 5/4 of the peak in use before evicting

// Every pointer this allocator hands out is its own context, as libtorch's
// raw_allocate/raw_deallocate require; large ones are found in `sizes_`.
class CachingCpuAllocator final : public c10::Allocator {
 public:
  CachingCpuAllocator() : small_(c10::GetDefaultCPUAllocator()) {
    const char* mb = std::getenv("TOPIARY_CPU_CACHE_MB");
    limit_ = (mb != nullptr ? std::atoll(mb) : 4096) << 20;
  }

  c10::DataPtr allocate(size_t n) override {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (n < kMinCached) {
      c10::DataPtr d = small_->allocate(n);
      void* p = d.release_context();  // the default allocator's context is the pointer
      return {p, p, &Delete, cpu};
    }
    const size_t size = (n + kHuge - 1) / kHuge * kHuge;
    void* p = nullptr;
    std::vector<std::pair<void*, size_t>> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Best fit among cached blocks no more than 1/8 larger than asked.
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= size + size / 8) {
        p = it->second;
        cached_ -= static_cast<int64_t>(it->first);
        in_use_ += static_cast<int64_t>(it->first);
        peak_in_use_ = std::max(peak_in_use_, in_use_);
        free_.erase(it);
        ++hits_;
      } else {
        ++misses_;
        // Keep what is mapped within 5/4 of the peak in use (plus a little):
        // unmap cached blocks, largest first, before mapping more. A
        // training step's sizes repeat and settle well inside this bound.
        const int64_t need = static_cast<int64_t>(size);
        const int64_t bound = std::max(peak_in_use_, in_use_ + need) / 4 * 5 + kSlack;
        while (!free_.empty() && in_use_ + cached_ + need > bound) {
          auto largest = std::prev(free_.end());
          evicted.emplace_back(largest->second, largest->first);
          cached_ -= static_cast<int64_t>(largest->first);
          sizes_.erase(largest->second);
          free_.erase(largest);
        }
      }
    }
    for (auto& [q, n] : evicted) ::munmap(q, n);
    if (p == nullptr) {
      p = Map(size);
      std::lock_guard<std::mutex> lock(mu_);
      sizes_[p] = size;
      in_use_ += static_cast<int64_t>(size);
      peak_in_use_ = std::max(peak_in_use_, in_use_);
    }
    return {p, p, &Delete, cpu};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &Delete; }

  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

  void Release(void* p) {
    size_t size = 0;
    bool keep = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(p);
      if (it != sizes_.end()) {
        size = it->second;
        in_use_ -= static_cast<int64_t>(size);
        keep = cached_ + static_cast<int64_t>(size) <= limit_;
        if (keep) {
          free_.emplace(size, p);
          cached_ += static_cast<int64_t>(size);
        } else {
          sizes_.erase(it);
        }
      }
    }
    if (size == 0) {
      small_->raw_deleter()(p);
    } else if (!keep) {
      ::munmap(p, size);
    }
  }

  void ReleaseAll() {
    std::multimap<size_t, void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocks.swap(free_);
      for (auto& [size, p] : blocks) sizes_.erase(p);
      cached_ = 0;
    }
    for (auto& [size, p] : blocks) ::munmap(p, size);
  }

  CpuCacheStats Stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return {hits_, misses_, in_use_, cached_, peak_in_use_};
  }

  void SetLimit(int64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      limit_ = bytes;
    }
    ReleaseAll();
  }

  static void Delete(void* p);

 private:
  static void* Map(size_t size) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    ::madvise(p, size, MADV_HUGEPAGE);  // a hint: fewer faults and TLB misses where THP is allowed
    return p;
  }

  c10::Allocator* small_;
  mutable std::mutex mu_;
  mutable std::multimap<size_t, void*> free_;        // size -> cached block
  mutable std::unordered_map<void*, size_t> sizes_;  // every large block, in use or cached
  mutable int64_t hits_ = 0, misses_ = 0, in_use_ = 0, cached_ = 0, peak_in_use_ = 0;
  int64_t limit_;
};

CachingCpuAllocator& Instance() {
  static auto* a = new CachingCpuAllocator;  // never destroyed: tensors may outlive main
  return *a;
}

void CachingCpuAllocator::Delete(void* p) {
  if (p != nullptr) Instance().Release(p);
}

}  // namespace

void InstallCachingCpuAllocator() {
  static std::once_flag once;
  std::call_once(once, [] { c10::SetCPUAllocator(&Instance(), /*priority=*/1); });
}

CpuCacheStats GetCpuCacheStats() { return Instance().Stats(); }

void ReleaseCachedCpuMemory() { Instance().ReleaseAll(); }

void SetCpuCacheLimit(int64_t bytes) { Instance().SetLimit(bytes); }

}  // namespace topiary::model
