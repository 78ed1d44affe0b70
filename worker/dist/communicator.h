// Communicator: collectives across the ranks of one task (docs/design.md,
// "Distributed execution"), kept out of model code: callers hand it tensors, it never sees the
// model.
//
// Ordering contract: every rank calls the same collectives in the same order
// with tensors of the same shape and dtype. Every call blocks until the
// collective is complete on this rank, or fails: a peer that died or stopped
// answering turns into UNAVAILABLE or DEADLINE_EXCEEDED within the
// communicator's timeout, never a hang. After any failed collective the
// communicator is broken: the task must fail (and is retried from its last
// checkpoint). Not thread-safe: one thread issues collectives.
//
// Backends: Gloo (CPU tensors, gloo_communicator.h), NCCL (CUDA tensors,
// nccl_communicator.h, built when NCCL is found), Local (one rank), and
// FaultyCommunicator for tests (fails a chosen collective).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace topiary::dist {

enum class ReduceOp { kSum, kMax, kMin, kAvg };

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;

  // In place: every rank ends with op over all ranks' `tensor`.
  virtual absl::Status AllReduce(at::Tensor& tensor, ReduceOp op = ReduceOp::kSum) = 0;
  // input (world*N, ...) -> output (N, ...): rank r gets chunk r of the sum.
  virtual absl::Status ReduceScatter(const at::Tensor& input, at::Tensor& output, ReduceOp op = ReduceOp::kSum) = 0;
  // input (N, ...) -> output (world*N, ...) in rank order.
  virtual absl::Status AllGather(const at::Tensor& input, at::Tensor& output) = 0;
  // In place: every rank ends with `root`'s tensor.
  virtual absl::Status Broadcast(at::Tensor& tensor, int root) = 0;
  virtual absl::Status Barrier() = 0;
};

// World of one: every collective is a copy or nothing.
std::unique_ptr<Communicator> MakeLocalCommunicator();

// Wraps `inner` and fails collective number `fail_at` (0-based) and every
// later one with UNAVAILABLE, without calling `inner`. Failure injection for
// tests of the code that issues collectives.
std::unique_ptr<Communicator> MakeFaultyCommunicator(std::unique_ptr<Communicator> inner, int64_t fail_at);

// Checks the shapes of a ReduceScatter/AllGather pair: `big` must be world
// times `small` along dim 0 with the same trailing shape and dtype.
absl::Status CheckChunked(const at::Tensor& big, const at::Tensor& small, int world, const char* op);

}  // namespace topiary::dist
