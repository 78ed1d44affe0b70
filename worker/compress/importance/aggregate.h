// Aggregation of activation magnitudes over sequence and batch (Minitron,
// arXiv:2407.14679, Table 13): score = agg_B agg_T |x|, each agg one of
// mean, l2, var; default batch l2, sequence mean.
//
// The sequence aggregation runs inside each sequence; the batch aggregation
// keeps sufficient statistics (sum, sum of squares, count) so that memory does
// not grow with the number of calibration samples and ranks can combine their
// statistics with one all-reduce (docs/design.md, "The algorithms"). Thread-compatible.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace topiary::compress {

enum class Agg { kMean, kL2, kVar };
absl::StatusOr<Agg> ParseAgg(absl::string_view name);
const char* AggName(Agg agg);

struct Aggregation {
  Agg batch = Agg::kL2;
  Agg seq = Agg::kMean;
};

// Per-unit statistics over sequences: each Add() takes (B, T, U) magnitudes,
// aggregates over T, and accumulates the (B, U) results.
class UnitStats {
 public:
  UnitStats() = default;
  explicit UnitStats(int64_t units);
  // x: (B, T, U) non-negative magnitudes, any float dtype (accumulated in fp32).
  void Add(const at::Tensor& x, Agg seq_agg);
  // The final per-unit score (U) in fp32.
  at::Tensor Score(Agg batch_agg) const;
  // Sufficient statistics packed as (3, U): sum, sum of squares, count.
  at::Tensor Packed() const;
  void SetPacked(const at::Tensor& packed);
  int64_t units() const { return sum_.defined() ? sum_.numel() : 0; }

 private:
  at::Tensor sum_, sumsq_;  // (U) fp32
  double count_ = 0;
};

}  // namespace topiary::compress
