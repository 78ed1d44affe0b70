#include "server/rpc/worker_service.h"

#include "common/status_macros.h"

namespace topiary::server {

absl::Status WorkerServiceImpl::CheckWorker(grpc::ServerContext* ctx) const {
  ASSIGN_OR_RETURN(Principal p, auth_->Authenticate(AuthorizationHeader(ctx)));
  if (auth_->enabled() && p.role != Principal::Role::kWorker) {
    return absl::PermissionDeniedError("the worker API needs a worker token");
  }
  return absl::OkStatus();
}

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext* ctx, const v1::RegisterWorkerRequest* req,
                                               v1::RegisterWorkerResponse* resp) {
  absl::Status st = CheckWorker(ctx);
  if (st.ok()) {
    auto r = scheduler_->Register(*req);
    if (r.ok()) *resp = *r;
    st = r.status();
  }
  return Done("RegisterWorker", st);
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                                          v1::HeartbeatResponse* resp) {
  absl::Status st = CheckWorker(ctx);
  if (st.ok()) {
    auto r = scheduler_->Heartbeat(req->worker_id());
    if (r.ok()) *resp = *r;
    st = r.status();
  }
  return Done("Heartbeat", st);
}

grpc::Status WorkerServiceImpl::PollAssignments(grpc::ServerContext* ctx, const v1::PollAssignmentsRequest* req,
                                                v1::PollAssignmentsResponse* resp) {
  absl::Status st = CheckWorker(ctx);
  if (st.ok()) {
    auto r = scheduler_->Poll(req->worker_id(), req->wait_micros());
    if (r.ok()) {
      for (auto& a : *r) *resp->add_assignments() = std::move(a);
    }
    st = r.status();
  }
  return Done("PollAssignments", st);
}

grpc::Status WorkerServiceImpl::ReportProgress(grpc::ServerContext* ctx, const v1::ReportProgressRequest* req,
                                               v1::ReportProgressResponse* resp) {
  absl::Status st = CheckWorker(ctx);
  if (st.ok()) {
    auto r = scheduler_->Progress(*req);
    if (r.ok()) resp->set_cancel(*r);
    st = r.status();
  }
  return Done("ReportProgress", st);
}

grpc::Status WorkerServiceImpl::CompleteTask(grpc::ServerContext* ctx, const v1::CompleteTaskRequest* req,
                                             v1::CompleteTaskResponse*) {
  absl::Status st = CheckWorker(ctx);
  if (st.ok()) st = scheduler_->Complete(*req);
  return Done("CompleteTask", st);
}

grpc::Status WorkerServiceImpl::RendezvousSet(grpc::ServerContext* ctx, const v1::RendezvousSetRequest* req,
                                              v1::RendezvousSetResponse*) {
  absl::Status st = CheckWorker(ctx);
  if (st.ok()) st = rendezvous_->Set(req->key(), req->value());
  return Done("RendezvousSet", st);
}

grpc::Status WorkerServiceImpl::RendezvousGet(grpc::ServerContext* ctx, const v1::RendezvousGetRequest* req,
                                              v1::RendezvousGetResponse* resp) {
  absl::Status st = CheckWorker(ctx);
  if (st.ok()) {
    auto r = rendezvous_->Get(req->key(), std::min<int64_t>(req->wait_micros(), 60'000'000));
    if (r.ok() && r->has_value()) resp->set_found(true), resp->set_value(**r);
    st = r.status();
  }
  return Done("RendezvousGet", st);
}

}  // namespace topiary::server
