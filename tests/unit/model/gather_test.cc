#include "worker/model/gather.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>

namespace topiary::model {
namespace {

// `bytes` of random data that end where an unreadable page begins: a read
// past the end faults.
class Guarded {
 public:
  explicit Guarded(size_t bytes, uint32_t seed) : page_(static_cast<size_t>(::sysconf(_SC_PAGESIZE))) {
    span_ = (bytes + page_ - 1) / page_ * page_ + page_;
    base_ = static_cast<uint8_t*>(::mmap(nullptr, span_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ::mprotect(base_ + span_ - page_, page_, PROT_NONE);
    data_ = base_ + span_ - page_ - bytes;
    std::mt19937 gen(seed);
    for (size_t i = 0; i < bytes; ++i) data_[i] = static_cast<uint8_t>(gen());
  }
  ~Guarded() { ::munmap(base_, span_); }
  const uint8_t* data() const { return data_; }

 private:
  size_t page_, span_;
  uint8_t* base_;
  uint8_t* data_;
};

std::vector<int64_t> SortedSubset(int64_t n, int64_t keep, std::mt19937& gen) {
  std::vector<int64_t> all(n);
  for (int64_t i = 0; i < n; ++i) all[i] = i;
  std::shuffle(all.begin(), all.end(), gen);
  all.resize(keep);
  std::sort(all.begin(), all.end());
  return all;
}

std::vector<GatherKernel> KernelsHere() {
  std::vector<GatherKernel> k;
  for (GatherKernel g : {GatherKernel::kScalar, GatherKernel::kSsse3, GatherKernel::kAvx512}) {
    if (GatherKernelRuns(g)) k.push_back(g);
  }
  return k;
}

// Every kernel this CPU runs gathers what the plain loop gathers, for every
// element size, row lengths that are and are not whole chunks, sparse and
// dense column sets, and writes nothing outside the rows it is given.
TEST(Gather, EveryKernelMatchesThePlainLoop) {
  std::mt19937 gen(7);
  int cases = 0;
  for (GatherKernel kernel : KernelsHere()) {
    for (size_t es : {1, 2, 4, 8}) {
      for (int64_t src_cols : {1, 7, 8, 31, 33, 64, 100, 4101}) {
        for (double frac : {0.0, 0.125, 0.5, 0.75, 0.99, 1.0}) {
          const int64_t keep = std::max<int64_t>(1, static_cast<int64_t>(frac * src_cols));
          const int64_t src_rows = 9;
          std::vector<int64_t> cols = SortedSubset(src_cols, keep, gen);
          std::vector<int64_t> rows = {8, 0, 3, 3, 5, 8, 1};  // ends on the last source row, at the guard page
          Guarded src(static_cast<size_t>(src_rows * src_cols) * es, gen());
          const int64_t begin = 1, end = static_cast<int64_t>(rows.size());
          const size_t out_row = cols.size() * es, out_bytes = (end - begin) * out_row, pad = 64;
          std::vector<uint8_t> dst(out_bytes + 2 * pad, 0xAB);
          GatherRowsWith(kernel, src.data(), src_cols, es, rows, cols, begin, end, dst.data() + pad);
          std::vector<uint8_t> want(out_bytes);
          for (int64_t r = begin; r < end; ++r) {
            for (size_t j = 0; j < cols.size(); ++j) {
              std::memcpy(&want[(r - begin) * out_row + j * es], src.data() + (rows[r] * src_cols + cols[j]) * es, es);
            }
          }
          const std::string where = "kernel " + std::to_string(static_cast<int>(kernel)) + " element " +
                                    std::to_string(es) + " cols " + std::to_string(src_cols) + " keep " +
                                    std::to_string(keep);
          ASSERT_EQ(0, std::memcmp(want.data(), dst.data() + pad, out_bytes)) << where;
          for (size_t i = 0; i < pad; ++i) {
            ASSERT_EQ(dst[i], 0xAB) << where << ": wrote before dst";
            ASSERT_EQ(dst[pad + out_bytes + i], 0xAB) << where << ": wrote past dst";
          }
          ++cases;
        }
      }
    }
  }
  if (!GatherKernelRuns(GatherKernel::kAvx512)) std::printf("note: this CPU has no AVX-512 VBMI2 kernel to check\n");
  EXPECT_GT(cases, 0);
}

// Columns out of order (not what a prune plan makes) are still gathered, in
// the order given.
TEST(Gather, UnsortedColumnsKeepTheirOrder) {
  const std::vector<uint16_t> src = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const std::vector<int64_t> rows = {1, 0}, cols = {7, 0, 3, 2, 1, 4, 5, 6};
  for (GatherKernel kernel : KernelsHere()) {
    std::vector<uint16_t> dst(16);
    GatherRowsWith(kernel, src.data(), 8, 2, rows, cols, 0, 2, dst.data());
    EXPECT_EQ(dst, (std::vector<uint16_t>{15, 8, 11, 10, 9, 12, 13, 14, 7, 0, 3, 2, 1, 4, 5, 6}));
  }
}

TEST(Gather, WholeRowsAreCopied) {
  const std::vector<uint32_t> src = {0, 1, 2, 3, 4, 5};
  std::vector<uint32_t> dst(6);
  GatherRows(src.data(), 2, 4, {2, 0, 1}, {0, 1}, /*all_cols=*/true, 0, 3, dst.data());
  EXPECT_EQ(dst, (std::vector<uint32_t>{4, 5, 0, 1, 2, 3}));
}

}  // namespace
}  // namespace topiary::model
