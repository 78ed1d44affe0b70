#include "worker/data/sampler.h"

#include <torch/torch.h>

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace topiary::data {

absl::StatusOr<std::pair<TokenRange, TokenRange>> SplitHeldOut(int64_t n, double f) {
  if (!(f >= 0 && f < 1))
    return absl::InvalidArgumentError(absl::StrCat("held_out fraction ", f, " must be in [0, 1)"));
  int64_t held = static_cast<int64_t>(static_cast<double>(n) * f);
  return std::make_pair(TokenRange{0, n - held}, TokenRange{n - held, n});
}

absl::StatusOr<SequenceSampler> SequenceSampler::Create(const TokenFile* file, TokenRange range, int64_t seq_len,
                                                        uint64_t seed) {
  if (seq_len <= 0) return absl::InvalidArgumentError("seq_len must be positive");
  if (range.begin < 0 || range.end > file->size() || range.begin > range.end) {
    return absl::InvalidArgumentError(absl::StrCat(file->path(), ": token range outside the file"));
  }
  if (range.size() < seq_len + 1) {
    return absl::InvalidArgumentError(absl::StrCat(file->path(), ": ", range.size(),
                                                   " tokens cannot hold one sequence of seq_len ", seq_len, " (+1)"));
  }
  SequenceSampler s;
  s.file_ = file;
  s.range_ = range;
  s.seq_len_ = seq_len;
  s.seed_ = seed;
  // Each epoch shifts the window grid by a seeded offset in [0, T), so epochs
  // see different windows; the count is fixed so that it fits any offset.
  s.num_windows_ = std::max<int64_t>(1, (range.size() - seq_len) / seq_len);
  return s;
}

int64_t SequenceSampler::Start(int64_t index) {
  const int64_t epoch = index / num_windows_;
  if (epoch != cached_epoch_) {
    perm_.resize(num_windows_);
    for (int64_t i = 0; i < num_windows_; ++i) perm_[i] = i;
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch));
    // Fisher-Yates with our own index draw: std::shuffle's use of the
    // distribution is implementation-defined, and the order must not change.
    for (int64_t i = num_windows_ - 1; i > 0; --i) {
      int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
      std::swap(perm_[i], perm_[j]);
    }
    offset_ = range_.size() - 1 >= (num_windows_ + 1) * seq_len_
                  ? static_cast<int64_t>(rng() % static_cast<uint64_t>(seq_len_))
                  : 0;
    cached_epoch_ = epoch;
  }
  return range_.begin + offset_ + perm_[index % num_windows_] * seq_len_;
}

absl::StatusOr<Batch> SequenceSampler::Sequences(const std::vector<int64_t>& indices) {
  std::vector<int64_t> starts;
  starts.reserve(indices.size());
  for (int64_t i : indices) starts.push_back(Start(i));
  return ReadSequences(*file_, starts, seq_len_);
}

absl::StatusOr<Batch> SequenceSampler::GlobalBatchShard(int64_t step, int64_t global_batch, int rank, int world) {
  if (world <= 0 || rank < 0 || rank >= world) return absl::InvalidArgumentError("bad rank/world");
  if (global_batch % world != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("global_batch ", global_batch, " is not a multiple of ", world, " ranks"));
  }
  std::vector<int64_t> idx;
  for (int64_t i = rank; i < global_batch; i += world) idx.push_back(step * global_batch + i);
  return Sequences(idx);
}

std::vector<int64_t> EvalWindowStarts(TokenRange range, int64_t seq_len, int64_t max_windows) {
  std::vector<int64_t> starts;
  for (int64_t s = range.begin; s + seq_len + 1 <= range.end; s += seq_len) {
    if (max_windows > 0 && static_cast<int64_t>(starts.size()) >= max_windows) break;
    starts.push_back(s);
  }
  return starts;
}

absl::StatusOr<Batch> ReadSequences(const TokenFile& file, const std::vector<int64_t>& starts, int64_t seq_len) {
  const int64_t B = static_cast<int64_t>(starts.size()), T = seq_len;
  at::Tensor buf = at::empty({B, T + 1}, at::kLong);
  int64_t* p = buf.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) RETURN_IF_ERROR(file.Read(starts[b], T + 1, p + b * (T + 1)));
  return Batch{buf.narrow(1, 0, T).contiguous(), buf.narrow(1, 1, T).contiguous()};
}

}  // namespace topiary::data
