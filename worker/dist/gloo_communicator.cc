#include "worker/dist/gloo_communicator.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace topiary::dist {
namespace {

using Millis = std::chrono::milliseconds;

// c10d's Store view of a Rendezvous: the subset Gloo uses (set, get, wait,
// check). Errors become c10::Error, which c10d expects.
class RendezvousStore : public c10d::Store {
 public:
  RendezvousStore(Rendezvous* r, Millis timeout) : r_(r) { timeout_ = timeout; }

  c10::intrusive_ptr<c10d::Store> clone() override { return c10::make_intrusive<RendezvousStore>(r_, timeout_); }

  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    absl::Status s = r_->Set(key, absl::string_view(reinterpret_cast<const char*>(value.data()), value.size()));
    TORCH_CHECK(s.ok(), s.ToString());
  }
  std::vector<uint8_t> get(const std::string& key) override {
    absl::StatusOr<std::string> v = WaitGet(*r_, key, absl::FromChrono(timeout_));
    TORCH_CHECK(v.ok(), v.status().ToString());
    return std::vector<uint8_t>(v->begin(), v->end());
  }
  int64_t add(const std::string& key, int64_t) override {
    TORCH_CHECK(false, "rendezvous store: add('", key, "') is not used by Topiary's Gloo backend");
  }
  bool deleteKey(const std::string&) override { return false; }
  bool check(const std::vector<std::string>& keys) override {
    for (const std::string& k : keys) {
      absl::StatusOr<std::optional<std::string>> v = r_->TryGet(k);
      TORCH_CHECK(v.ok(), v.status().ToString());
      if (!v->has_value()) return false;
    }
    return true;
  }
  int64_t getNumKeys() override { TORCH_CHECK(false, "rendezvous store: getNumKeys is not supported"); }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const Millis& timeout) override {
    for (const std::string& k : keys) {
      absl::StatusOr<std::string> v = WaitGet(*r_, k, absl::FromChrono(timeout));
      TORCH_CHECK(v.ok(), v.status().ToString());
    }
  }

 private:
  Rendezvous* r_;
};

absl::Status FromTorch(const char* op, const std::exception& e) {
  std::string what = e.what();
  if (size_t nl = what.find("\nException raised from"); nl != std::string::npos) what.resize(nl);
  const std::string msg = absl::StrCat(op, " (gloo): ", what);
  if (absl::StrContains(what, "imed out") || absl::StrContains(what, "DEADLINE_EXCEEDED")) {
    return absl::DeadlineExceededError(msg);
  }
  return absl::UnavailableError(msg);
}

c10d::ReduceOp ToC10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return c10d::ReduceOp::SUM;
    case ReduceOp::kMax:
      return c10d::ReduceOp::MAX;
    case ReduceOp::kMin:
      return c10d::ReduceOp::MIN;
    case ReduceOp::kAvg:
      return c10d::ReduceOp::SUM;  // divided afterwards: Gloo has no AVG
  }
  return c10d::ReduceOp::SUM;
}

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(c10::intrusive_ptr<c10d::ProcessGroupGloo> pg, Millis timeout)
      : pg_(std::move(pg)), timeout_(timeout) {}

  int rank() const override { return pg_->getRank(); }
  int world_size() const override { return pg_->getSize(); }
  std::string backend() const override { return "gloo"; }

  absl::Status AllReduce(at::Tensor& t, ReduceOp op) override {
    if (absl::Status s = CheckCpu(t, "AllReduce"); !s.ok()) return s;
    return Run("AllReduce", [&] {
      std::vector<at::Tensor> v{t};
      c10d::AllreduceOptions o;
      o.reduceOp = ToC10d(op);
      o.timeout = timeout_;
      Wait(pg_->allreduce(v, o));
      if (op == ReduceOp::kAvg) t.div_(world_size());
    });
  }

  // Gloo in libtorch 1.13 has no reduce_scatter: all-reduce, keep our chunk.
  absl::Status ReduceScatter(const at::Tensor& input, at::Tensor& output, ReduceOp op) override {
    if (absl::Status s = CheckChunked(input, output, world_size(), "ReduceScatter"); !s.ok()) return s;
    at::Tensor full = input.clone();
    if (absl::Status s = AllReduce(full, op); !s.ok()) return s;
    output.copy_(full.narrow(0, rank() * output.size(0), output.size(0)));
    return absl::OkStatus();
  }

  absl::Status AllGather(const at::Tensor& input, at::Tensor& output) override {
    if (absl::Status s = CheckChunked(output, input, world_size(), "AllGather"); !s.ok()) return s;
    if (absl::Status s = CheckCpu(input, "AllGather"); !s.ok()) return s;
    return Run("AllGather", [&] {
      std::vector<std::vector<at::Tensor>> outs(1);
      for (const at::Tensor& chunk : output.chunk(world_size(), 0)) outs[0].push_back(chunk);
      std::vector<at::Tensor> in{input};
      c10d::AllgatherOptions o;
      o.timeout = timeout_;
      Wait(pg_->allgather(outs, in, o));
    });
  }

  absl::Status Broadcast(at::Tensor& t, int root) override {
    if (root < 0 || root >= world_size()) {
      return absl::InvalidArgumentError(absl::StrCat("Broadcast: root ", root, " outside [0, ", world_size(), ")"));
    }
    if (absl::Status s = CheckCpu(t, "Broadcast"); !s.ok()) return s;
    return Run("Broadcast", [&] {
      std::vector<at::Tensor> v{t};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      o.timeout = timeout_;
      Wait(pg_->broadcast(v, o));
    });
  }

  absl::Status Barrier() override {
    return Run("Barrier", [&] {
      c10d::BarrierOptions o;
      o.timeout = timeout_;
      Wait(pg_->barrier(o));
    });
  }

 private:
  static absl::Status CheckCpu(const at::Tensor& t, const char* op) {
    if (!t.defined() || !t.device().is_cpu() || !t.is_contiguous()) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": the Gloo backend takes defined, contiguous CPU tensors"));
    }
    return absl::OkStatus();
  }
  void Wait(const c10::intrusive_ptr<c10d::Work>& work) {
    if (!work->wait(timeout_)) TORCH_CHECK(false, "Timed out after ", timeout_.count(), " ms");
  }
  template <typename F>
  absl::Status Run(const char* op, F f) {
    if (!broken_.ok()) return broken_;
    try {
      f();
      return absl::OkStatus();
    } catch (const std::exception& e) {
      broken_ = FromTorch(op, e);
      return broken_;
    }
  }

  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  const Millis timeout_;
  absl::Status broken_;  // the first failure; every later call repeats it
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(Rendezvous* rendezvous, const GlooOptions& o) {
  if (o.world_size < 1) return absl::InvalidArgumentError("world_size: must be at least 1");
  if (o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank: ", o.rank, " outside [0, ", o.world_size, ")"));
  }
  if (o.timeout <= absl::ZeroDuration()) return absl::InvalidArgumentError("timeout: must be positive");
  const Millis timeout(absl::ToInt64Milliseconds(o.timeout));
  try {
    auto store = c10::make_intrusive<RendezvousStore>(rendezvous, timeout);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(o.hostname));
    opts->threads = 1;
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.world_size, opts);
    return std::unique_ptr<Communicator>(new GlooCommunicator(std::move(pg), timeout));
  } catch (const std::exception& e) {
    return FromTorch("connect", e);
  }
}

}  // namespace topiary::dist
