#include "worker/compress/importance/aggregate.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace topiary::compress {

absl::StatusOr<Agg> ParseAgg(absl::string_view name) {
  if (name == "mean") return Agg::kMean;
  if (name == "l2") return Agg::kL2;
  if (name == "var") return Agg::kVar;
  return absl::InvalidArgumentError(absl::StrCat("aggregation '", name, "': expected mean, l2 or var"));
}

const char* AggName(Agg agg) {
  switch (agg) {
    case Agg::kMean:
      return "mean";
    case Agg::kL2:
      return "l2";
    case Agg::kVar:
      return "var";
  }
  return "?";
}

UnitStats::UnitStats(int64_t units) : sum_(at::zeros({units}, at::kFloat)), sumsq_(at::zeros({units}, at::kFloat)) {}

void UnitStats::Add(const at::Tensor& x, Agg seq_agg) {
  torch::NoGradGuard no_grad;
  at::Tensor a = x.to(at::kFloat);  // (B, T, U)
  at::Tensor per_seq;               // (B, U)
  switch (seq_agg) {
    case Agg::kMean:
      per_seq = a.mean(1);
      break;
    case Agg::kL2:
      per_seq = a.pow(2).sum(1).sqrt();
      break;
    case Agg::kVar:
      per_seq = a.var(1, /*unbiased=*/false);
      break;
  }
  if (!sum_.defined()) {
    sum_ = at::zeros({per_seq.size(1)}, at::kFloat);
    sumsq_ = at::zeros({per_seq.size(1)}, at::kFloat);
  }
  sum_.add_(per_seq.sum(0));
  sumsq_.add_(per_seq.pow(2).sum(0));
  count_ += static_cast<double>(per_seq.size(0));
}

at::Tensor UnitStats::Score(Agg batch_agg) const {
  if (count_ == 0) return sum_.defined() ? at::zeros_like(sum_) : at::Tensor();
  switch (batch_agg) {
    case Agg::kMean:
      return sum_ / count_;
    case Agg::kL2:
      return sumsq_.sqrt();
    case Agg::kVar:
      return (sumsq_ / count_ - (sum_ / count_).pow(2)).clamp_min(0);
  }
  return sum_;
}

at::Tensor UnitStats::Packed() const {
  return at::stack({sum_, sumsq_, at::full_like(sum_, static_cast<float>(count_))});
}

void UnitStats::SetPacked(const at::Tensor& packed) {
  sum_ = packed[0].clone();
  sumsq_ = packed[1].clone();
  count_ = packed[2][0].item<double>();
}

}  // namespace topiary::compress
