#include "worker/dist/communicator.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"

namespace topiary::dist {
namespace {

class LocalCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "local"; }
  absl::Status AllReduce(at::Tensor&, ReduceOp) override { return absl::OkStatus(); }
  absl::Status ReduceScatter(const at::Tensor& input, at::Tensor& output, ReduceOp) override {
    if (absl::Status s = CheckChunked(input, output, 1, "ReduceScatter"); !s.ok()) return s;
    output.copy_(input);
    return absl::OkStatus();
  }
  absl::Status AllGather(const at::Tensor& input, at::Tensor& output) override {
    if (absl::Status s = CheckChunked(output, input, 1, "AllGather"); !s.ok()) return s;
    output.copy_(input);
    return absl::OkStatus();
  }
  absl::Status Broadcast(at::Tensor&, int root) override {
    if (root != 0) return absl::InvalidArgumentError(absl::StrCat("Broadcast: root ", root, " outside a world of 1"));
    return absl::OkStatus();
  }
  absl::Status Barrier() override { return absl::OkStatus(); }
};

class FaultyCommunicator : public Communicator {
 public:
  FaultyCommunicator(std::unique_ptr<Communicator> inner, int64_t fail_at)
      : inner_(std::move(inner)), fail_at_(fail_at) {}
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  std::string backend() const override { return "faulty(" + inner_->backend() + ")"; }
  absl::Status AllReduce(at::Tensor& t, ReduceOp op) override {
    return Next("AllReduce", [&] { return inner_->AllReduce(t, op); });
  }
  absl::Status ReduceScatter(const at::Tensor& in, at::Tensor& out, ReduceOp op) override {
    return Next("ReduceScatter", [&] { return inner_->ReduceScatter(in, out, op); });
  }
  absl::Status AllGather(const at::Tensor& in, at::Tensor& out) override {
    return Next("AllGather", [&] { return inner_->AllGather(in, out); });
  }
  absl::Status Broadcast(at::Tensor& t, int root) override {
    return Next("Broadcast", [&] { return inner_->Broadcast(t, root); });
  }
  absl::Status Barrier() override {
    return Next("Barrier", [&] { return inner_->Barrier(); });
  }

 private:
  template <typename F>
  absl::Status Next(const char* op, F f) {
    if (calls_++ >= fail_at_) {
      return absl::UnavailableError(absl::StrCat(op, ": injected failure (collective ", calls_ - 1, ")"));
    }
    return f();
  }
  std::unique_ptr<Communicator> inner_;
  const int64_t fail_at_;
  int64_t calls_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> MakeLocalCommunicator() { return std::make_unique<LocalCommunicator>(); }

std::unique_ptr<Communicator> MakeFaultyCommunicator(std::unique_ptr<Communicator> inner, int64_t fail_at) {
  return std::make_unique<FaultyCommunicator>(std::move(inner), fail_at);
}

absl::Status CheckChunked(const at::Tensor& big, const at::Tensor& small, int world, const char* op) {
  if (!big.defined() || !small.defined() || big.dim() == 0 || big.dim() != small.dim() ||
      big.scalar_type() != small.scalar_type() || big.size(0) != small.size(0) * world ||
      big.sizes().slice(1) != small.sizes().slice(1)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": the large tensor must be world_size (", world,
                                                   ") times the small one along dim 0, same dtype"));
  }
  if (!big.is_contiguous() || !small.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": tensors must be contiguous"));
  }
  return absl::OkStatus();
}

}  // namespace topiary::dist
