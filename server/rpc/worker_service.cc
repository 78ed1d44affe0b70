#include "server/rpc/worker_service.h"

#include <algorithm>

#include "common/status_macros.h"

namespace topiary::server {

absl::StatusOr<std::string> WorkerServiceImpl::CheckWorker(grpc::ServerContext* ctx) const {
  ASSIGN_OR_RETURN(Principal p, auth_->Authenticate(AuthorizationHeader(ctx)));
  if (auth_->enabled() && p.role != Principal::Role::kWorker) {
    return absl::PermissionDeniedError("the worker API needs a worker token");
  }
  return p.name;
}

absl::StatusOr<WorkerCall> WorkerServiceImpl::Call(grpc::ServerContext* ctx, const std::string& worker_id,
                                                   const std::string& secret) const {
  ASSIGN_OR_RETURN(std::string principal, CheckWorker(ctx));
  return WorkerCall{principal, worker_id, secret};
}

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext* ctx, const v1::RegisterWorkerRequest* req,
                                               v1::RegisterWorkerResponse* resp) {
  absl::StatusOr<std::string> principal = CheckWorker(ctx);
  absl::Status st = principal.status();
  if (st.ok()) {
    auto r = scheduler_->Register(*principal, *req);
    if (r.ok()) *resp = *r;
    st = r.status();
  }
  return Done("RegisterWorker", st);
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                                          v1::HeartbeatResponse* resp) {
  absl::StatusOr<WorkerCall> who = Call(ctx, req->worker_id(), req->secret());
  absl::Status st = who.status();
  if (st.ok()) {
    auto r = scheduler_->Heartbeat(*who, *req);
    if (r.ok()) *resp = *r;
    st = r.status();
  }
  return Done("Heartbeat", st);
}

grpc::Status WorkerServiceImpl::PollAssignments(grpc::ServerContext* ctx, const v1::PollAssignmentsRequest* req,
                                                v1::PollAssignmentsResponse* resp) {
  absl::StatusOr<WorkerCall> who = Call(ctx, req->worker_id(), req->secret());
  absl::Status st = who.status();
  if (st.ok()) {
    auto r = scheduler_->Poll(*who, req->wait_micros());
    if (r.ok()) {
      for (auto& a : *r) *resp->add_assignments() = std::move(a);
    }
    st = r.status();
  }
  return Done("PollAssignments", st);
}

grpc::Status WorkerServiceImpl::ReportProgress(grpc::ServerContext* ctx, const v1::ReportProgressRequest* req,
                                               v1::ReportProgressResponse* resp) {
  absl::StatusOr<WorkerCall> who = Call(ctx, req->worker_id(), req->secret());
  absl::Status st = who.status();
  if (st.ok()) {
    auto r = scheduler_->Progress(*who, *req);
    if (r.ok()) resp->set_cancel(*r);
    st = r.status();
  }
  return Done("ReportProgress", st);
}

grpc::Status WorkerServiceImpl::CompleteTask(grpc::ServerContext* ctx, const v1::CompleteTaskRequest* req,
                                             v1::CompleteTaskResponse*) {
  absl::StatusOr<WorkerCall> who = Call(ctx, req->worker_id(), req->secret());
  absl::Status st = who.status();
  if (st.ok()) st = scheduler_->Complete(*who, *req);
  return Done("CompleteTask", st);
}

grpc::Status WorkerServiceImpl::RendezvousSet(grpc::ServerContext* ctx, const v1::RendezvousSetRequest* req,
                                              v1::RendezvousSetResponse*) {
  absl::StatusOr<WorkerCall> who = Call(ctx, req->worker_id(), req->secret());
  absl::Status st = who.status();
  if (st.ok()) st = scheduler_->CheckRendezvous(*who, req->task_id(), req->attempt());
  if (st.ok()) st = rendezvous_->Set(req->task_id(), req->attempt(), req->key(), req->value());
  return Done("RendezvousSet", st);
}

grpc::Status WorkerServiceImpl::RendezvousGet(grpc::ServerContext* ctx, const v1::RendezvousGetRequest* req,
                                              v1::RendezvousGetResponse* resp) {
  absl::StatusOr<WorkerCall> who = Call(ctx, req->worker_id(), req->secret());
  absl::Status st = who.status();
  if (st.ok()) st = scheduler_->CheckRendezvous(*who, req->task_id(), req->attempt());
  if (st.ok()) {
    auto r = rendezvous_->Get(req->task_id(), req->attempt(), req->key(),
                              std::clamp<int64_t>(req->wait_micros(), 0, 60'000'000));
    if (r.ok() && r->has_value()) resp->set_found(true), resp->set_value(**r);
    st = r.status();
  }
  return Done("RendezvousGet", st);
}

}  // namespace topiary::server
