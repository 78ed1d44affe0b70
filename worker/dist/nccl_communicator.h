// The NCCL backend of Communicator (CUDA tensors). Built only when NCCL and
// the CUDA runtime are found (TOPIARY_WITH_NCCL); this header is the only
// place callers see it, and it names no CUDA or NCCL type.
//
// Rank 0 creates the NCCL unique id and publishes it through the Rendezvous;
// the others read it. The communicator is non-blocking underneath: every
// call polls NCCL's async error and the stream until done or `timeout`, and
// aborts the NCCL communicator on timeout, so a dead peer becomes
// DEADLINE_EXCEEDED instead of a hang. Not thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/dist/communicator.h"
#include "worker/dist/rendezvous.h"

namespace topiary::dist {

struct NcclOptions {
  int rank = 0;
  int world_size = 1;
  int device = 0;  // CUDA device ordinal of this rank
  absl::Duration timeout = absl::Seconds(300);
  std::string key = "nccl_unique_id";  // rendezvous key of the unique id
};

// Element types of the raw-buffer API.
enum class NcclType { kF32, kBF16, kF16, kF64, kI64, kI32, kU8 };

// Collectives on raw device buffers; what the tensor Communicator uses.
class NcclComm {
 public:
  virtual ~NcclComm() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual absl::Status AllReduce(const void* send, void* recv, size_t count, NcclType type, ReduceOp op) = 0;
  virtual absl::Status ReduceScatter(const void* send, void* recv, size_t recv_count, NcclType type, ReduceOp op) = 0;
  virtual absl::Status AllGather(const void* send, void* recv, size_t send_count, NcclType type) = 0;
  virtual absl::Status Broadcast(void* buf, size_t count, NcclType type, int root) = 0;
  virtual absl::Status Barrier() = 0;
};

absl::StatusOr<std::unique_ptr<NcclComm>> CreateNcclComm(Rendezvous* rendezvous, const NcclOptions& options);

// The tensor Communicator over NcclComm: CUDA tensors only.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(Rendezvous* rendezvous,
                                                                     const NcclOptions& options);

}  // namespace topiary::dist
