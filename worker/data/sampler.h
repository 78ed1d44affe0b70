// Fixed-length sequences from a token file: deterministic, seeded sampling
// for training, consecutive windows for evaluation, disjoint shards per rank,
// and a held-out split. Thread-compatible.
//
// A sequence of length T is T+1 consecutive tokens: inputs are the first T,
// targets the last T.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/data/token_file.h"

namespace topiary::data {

// A half-open range of token positions in a file.
struct TokenRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

// Splits [0, n) into (train, held_out) with the held-out part at the end.
absl::StatusOr<std::pair<TokenRange, TokenRange>> SplitHeldOut(int64_t n, double held_out_fraction);

struct Batch {
  at::Tensor inputs;   // (B, T) int64
  at::Tensor targets;  // (B, T) int64
};

// Training order: each epoch visits non-overlapping windows of T+1 tokens
// (stride T, the grid shifted by a seeded offset per epoch) once each, in an
// order shuffled by (seed, epoch). Sequence i
// of the global stream is a pure function of (seed, i), so a run resumes
// exactly from a sequence index, and rank r of W takes sequences
// i ≡ r (mod W) of each global batch: shards are disjoint.
class SequenceSampler {
 public:
  static absl::StatusOr<SequenceSampler> Create(const TokenFile* file, TokenRange range, int64_t seq_len,
                                                uint64_t seed);
  int64_t windows_per_epoch() const { return num_windows_; }
  // The start position of global sequence i.
  int64_t Start(int64_t index);
  // Global batch `step` has `global_batch` sequences [step*gb, (step+1)*gb).
  // This rank's part: the sequences whose index ≡ rank (mod world), in order.
  absl::StatusOr<Batch> GlobalBatchShard(int64_t step, int64_t global_batch, int rank, int world);
  // Any explicit list of global sequence indices.
  absl::StatusOr<Batch> Sequences(const std::vector<int64_t>& indices);

 private:
  const TokenFile* file_ = nullptr;
  TokenRange range_;
  int64_t seq_len_ = 0;
  uint64_t seed_ = 0;
  int64_t num_windows_ = 0;
  int64_t cached_epoch_ = -1;
  int64_t offset_ = 0;
  std::vector<int64_t> perm_;
};

// Evaluation windows: consecutive, non-overlapping, stride T, each T+1
// tokens long, so every token after the first is predicted exactly once.
// `max_windows` > 0 caps the count.
std::vector<int64_t> EvalWindowStarts(TokenRange range, int64_t seq_len, int64_t max_windows);

// Reads sequences of T+1 tokens starting at `starts`.
absl::StatusOr<Batch> ReadSequences(const TokenFile& file, const std::vector<int64_t>& starts, int64_t seq_len);

}  // namespace topiary::data
