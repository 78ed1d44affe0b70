#include "worker/job/coordinator_rendezvous.h"

#include <thread>

#include "absl/strings/str_cat.h"

namespace topiary::job {
namespace {

class CoordinatorRendezvous : public dist::Rendezvous {
 public:
  CoordinatorRendezvous(std::shared_ptr<grpc::Channel> channel, WorkerIdentity id, std::string task_id, int attempt)
      : stub_(v1::WorkerService::NewStub(channel)),
        id_(std::move(id)),
        task_id_(std::move(task_id)),
        attempt_(attempt) {}

  absl::Status Set(absl::string_view key, absl::string_view value) override {
    v1::RendezvousSetRequest req;
    req.set_key(std::string(key));
    req.set_value(std::string(value));
    req.set_worker_id(id_.worker_id);
    req.set_secret(id_.secret);
    req.set_task_id(task_id_);
    req.set_attempt(attempt_);
    absl::Status st;
    for (int i = 0; i < 5; ++i) {  // ride out a coordinator restart's first seconds
      v1::RendezvousSetResponse resp;
      st = rpc::FromGrpc(stub_->RendezvousSet(rpc::MakeContext(id_.token, std::chrono::seconds(10)).get(), req, &resp));
      if (!absl::IsUnavailable(st)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200 << i));
    }
    if (!st.ok()) return absl::Status(st.code(), absl::StrCat("rendezvous set '", key, "': ", st.message()));
    return st;
  }

  absl::StatusOr<std::optional<std::string>> TryGet(absl::string_view key) override {
    v1::RendezvousGetRequest req;
    req.set_key(std::string(key));
    req.set_wait_micros(100'000);
    req.set_worker_id(id_.worker_id);
    req.set_secret(id_.secret);
    req.set_task_id(task_id_);
    req.set_attempt(attempt_);
    v1::RendezvousGetResponse resp;
    absl::Status st =
        rpc::FromGrpc(stub_->RendezvousGet(rpc::MakeContext(id_.token, std::chrono::seconds(10)).get(), req, &resp));
    if (absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st)) return std::optional<std::string>();  // try again
    if (!st.ok()) return absl::Status(st.code(), absl::StrCat("rendezvous get '", key, "': ", st.message()));
    if (!resp.found()) return std::optional<std::string>();
    return std::optional<std::string>(resp.value());
  }

 private:
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  const WorkerIdentity id_;
  const std::string task_id_;
  const int attempt_;
};

}  // namespace

std::unique_ptr<dist::Rendezvous> MakeCoordinatorRendezvous(std::shared_ptr<grpc::Channel> channel,
                                                            WorkerIdentity identity, std::string task_id, int attempt) {
  return std::make_unique<CoordinatorRendezvous>(std::move(channel), std::move(identity), std::move(task_id), attempt);
}

}  // namespace topiary::job
