#include "worker/dist/nccl_communicator.h"

#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace topiary::dist {
namespace {

absl::Status CudaError(const char* what, cudaError_t e) {
  return absl::UnavailableError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

ncclDataType_t ToNccl(NcclType t) {
  switch (t) {
    case NcclType::kF32:
      return ncclFloat32;
    case NcclType::kBF16:
      return ncclBfloat16;
    case NcclType::kF16:
      return ncclFloat16;
    case NcclType::kF64:
      return ncclFloat64;
    case NcclType::kI64:
      return ncclInt64;
    case NcclType::kI32:
      return ncclInt32;
    case NcclType::kU8:
      return ncclUint8;
  }
  return ncclFloat32;
}

ncclRedOp_t ToNccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
    case ReduceOp::kAvg:
      return ncclAvg;
  }
  return ncclSum;
}

class NcclCommImpl : public NcclComm {
 public:
  NcclCommImpl(const NcclOptions& o) : o_(o) {}
  ~NcclCommImpl() override {
    if (comm_ != nullptr) {
      if (broken_.ok()) ncclCommFinalize(comm_);
      ncclCommAbort(comm_);
    }
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (scratch_ != nullptr) cudaFree(scratch_);
  }

  absl::Status Init(Rendezvous* r) {
    if (cudaError_t e = cudaSetDevice(o_.device); e != cudaSuccess) return CudaError("cudaSetDevice", e);
    if (cudaError_t e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking); e != cudaSuccess) {
      return CudaError("cudaStreamCreate", e);
    }
    if (cudaError_t e = cudaMalloc(&scratch_, sizeof(float)); e != cudaSuccess) return CudaError("cudaMalloc", e);
    ncclUniqueId id;
    if (o_.rank == 0) {
      if (ncclResult_t e = ncclGetUniqueId(&id); e != ncclSuccess) return Error("ncclGetUniqueId", e);
      RETURN_IF_ERROR(r->Set(o_.key, absl::string_view(id.internal, sizeof(id.internal))));
    } else {
      ASSIGN_OR_RETURN(std::string v, WaitGet(*r, o_.key, o_.timeout));
      if (v.size() != sizeof(id.internal)) return absl::DataLossError("rendezvous: NCCL unique id has the wrong size");
      std::memcpy(id.internal, v.data(), v.size());
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t e = ncclCommInitRankConfig(&comm_, o_.world_size, id, o_.rank, &config);
    if (e != ncclSuccess && e != ncclInProgress) return Error("ncclCommInitRankConfig", e);
    return Complete("ncclCommInitRankConfig", /*sync_stream=*/false);
  }

  int rank() const override { return o_.rank; }
  int world_size() const override { return o_.world_size; }

  absl::Status AllReduce(const void* send, void* recv, size_t count, NcclType type, ReduceOp op) override {
    return Launch("AllReduce", ncclAllReduce(send, recv, count, ToNccl(type), ToNccl(op), comm_, stream_));
  }
  absl::Status ReduceScatter(const void* send, void* recv, size_t n, NcclType type, ReduceOp op) override {
    return Launch("ReduceScatter", ncclReduceScatter(send, recv, n, ToNccl(type), ToNccl(op), comm_, stream_));
  }
  absl::Status AllGather(const void* send, void* recv, size_t n, NcclType type) override {
    return Launch("AllGather", ncclAllGather(send, recv, n, ToNccl(type), comm_, stream_));
  }
  absl::Status Broadcast(void* buf, size_t count, NcclType type, int root) override {
    if (root < 0 || root >= o_.world_size) {
      return absl::InvalidArgumentError(absl::StrCat("Broadcast: root ", root, " outside [0, ", o_.world_size, ")"));
    }
    return Launch("Broadcast", ncclBroadcast(buf, buf, count, ToNccl(type), root, comm_, stream_));
  }
  // NCCL has no barrier: an all-reduce of one float is one.
  absl::Status Barrier() override { return AllReduce(scratch_, scratch_, 1, NcclType::kF32, ReduceOp::kSum); }

 private:
  absl::Status Error(const char* op, ncclResult_t e) {
    return absl::UnavailableError(absl::StrCat(op, " (nccl): ", ncclGetErrorString(e)));
  }
  absl::Status Launch(const char* op, ncclResult_t e) {
    if (!broken_.ok()) return broken_;
    if (e != ncclSuccess && e != ncclInProgress) return broken_ = Error(op, e);
    return Complete(op, /*sync_stream=*/true);
  }
  // Polls until the communicator and the stream are idle, or the deadline.
  absl::Status Complete(const char* op, bool sync_stream) {
    const absl::Time deadline = absl::Now() + o_.timeout;
    while (true) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) return broken_ = Error(op, async);
      bool done = async == ncclSuccess;
      if (done && sync_stream) {
        cudaError_t q = cudaStreamQuery(stream_);
        if (q != cudaSuccess && q != cudaErrorNotReady) return broken_ = CudaError(op, q);
        done = q == cudaSuccess;
      }
      if (done) return absl::OkStatus();
      if (absl::Now() > deadline) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        return broken_ = absl::DeadlineExceededError(absl::StrCat(
                   op, " (nccl): not complete after ", absl::FormatDuration(o_.timeout), "; communicator aborted"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  const NcclOptions o_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* scratch_ = nullptr;
  absl::Status broken_;
};

absl::StatusOr<NcclType> TypeOf(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return NcclType::kF32;
    case at::kBFloat16:
      return NcclType::kBF16;
    case at::kHalf:
      return NcclType::kF16;
    case at::kDouble:
      return NcclType::kF64;
    case at::kLong:
      return NcclType::kI64;
    case at::kInt:
      return NcclType::kI32;
    case at::kByte:
      return NcclType::kU8;
    default:
      return absl::InvalidArgumentError(absl::StrCat("nccl: unsupported dtype ", at::toString(t.scalar_type())));
  }
}

class NcclCommunicator : public Communicator {
 public:
  explicit NcclCommunicator(std::unique_ptr<NcclComm> c) : c_(std::move(c)) {}
  int rank() const override { return c_->rank(); }
  int world_size() const override { return c_->world_size(); }
  std::string backend() const override { return "nccl"; }

  absl::Status AllReduce(at::Tensor& t, ReduceOp op) override {
    ASSIGN_OR_RETURN(NcclType type, Check(t, "AllReduce"));
    return c_->AllReduce(t.data_ptr(), t.data_ptr(), t.numel(), type, op);
  }
  absl::Status ReduceScatter(const at::Tensor& in, at::Tensor& out, ReduceOp op) override {
    RETURN_IF_ERROR(CheckChunked(in, out, world_size(), "ReduceScatter"));
    ASSIGN_OR_RETURN(NcclType type, Check(out, "ReduceScatter"));
    return c_->ReduceScatter(in.data_ptr(), out.data_ptr(), out.numel(), type, op);
  }
  absl::Status AllGather(const at::Tensor& in, at::Tensor& out) override {
    RETURN_IF_ERROR(CheckChunked(out, in, world_size(), "AllGather"));
    ASSIGN_OR_RETURN(NcclType type, Check(in, "AllGather"));
    return c_->AllGather(in.data_ptr(), out.data_ptr(), in.numel(), type);
  }
  absl::Status Broadcast(at::Tensor& t, int root) override {
    ASSIGN_OR_RETURN(NcclType type, Check(t, "Broadcast"));
    return c_->Broadcast(t.data_ptr(), t.numel(), type, root);
  }
  absl::Status Barrier() override { return c_->Barrier(); }

 private:
  static absl::StatusOr<NcclType> Check(const at::Tensor& t, const char* op) {
    if (!t.defined() || !t.is_cuda() || !t.is_contiguous()) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": the NCCL backend takes defined, contiguous CUDA tensors"));
    }
    return TypeOf(t);
  }
  std::unique_ptr<NcclComm> c_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<NcclComm>> CreateNcclComm(Rendezvous* r, const NcclOptions& o) {
  if (o.world_size < 1) return absl::InvalidArgumentError("world_size: must be at least 1");
  if (o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank: ", o.rank, " outside [0, ", o.world_size, ")"));
  }
  auto c = std::make_unique<NcclCommImpl>(o);
  RETURN_IF_ERROR(c->Init(r));
  return std::unique_ptr<NcclComm>(std::move(c));
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(Rendezvous* r, const NcclOptions& o) {
  ASSIGN_OR_RETURN(std::unique_ptr<NcclComm> c, CreateNcclComm(r, o));
  return std::unique_ptr<Communicator>(new NcclCommunicator(std::move(c)));
}

}  // namespace topiary::dist
