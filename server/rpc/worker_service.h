// topiary.v1.WorkerService over gRPC: authenticates the worker token, pairs
// the principal with the worker id and secret of the request, and hands
// each call to the Scheduler (which checks them) or the rendezvous store.
#pragma once

#include "server/rpc/auth.h"
#include "server/rpc/job_service.h"
#include "server/scheduler/rendezvous.h"
#include "server/scheduler/scheduler.h"
#include "topiary/v1/worker_service.grpc.pb.h"

namespace topiary::server {

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(Scheduler* scheduler, RendezvousStore* rendezvous, const Authenticator* auth,
                    JobServiceImpl::Observer on_done = nullptr)
      : scheduler_(scheduler), rendezvous_(rendezvous), auth_(auth), on_done_(std::move(on_done)) {}

  grpc::Status RegisterWorker(grpc::ServerContext* ctx, const v1::RegisterWorkerRequest* req,
                              v1::RegisterWorkerResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override;
  grpc::Status PollAssignments(grpc::ServerContext* ctx, const v1::PollAssignmentsRequest* req,
                               v1::PollAssignmentsResponse* resp) override;
  grpc::Status ReportProgress(grpc::ServerContext* ctx, const v1::ReportProgressRequest* req,
                              v1::ReportProgressResponse* resp) override;
  grpc::Status CompleteTask(grpc::ServerContext* ctx, const v1::CompleteTaskRequest* req,
                            v1::CompleteTaskResponse* resp) override;
  grpc::Status RendezvousSet(grpc::ServerContext* ctx, const v1::RendezvousSetRequest* req,
                             v1::RendezvousSetResponse* resp) override;
  grpc::Status RendezvousGet(grpc::ServerContext* ctx, const v1::RendezvousGetRequest* req,
                             v1::RendezvousGetResponse* resp) override;

 private:
  // The principal of a caller with a worker token.
  absl::StatusOr<std::string> CheckWorker(grpc::ServerContext* ctx) const;
  absl::StatusOr<WorkerCall> Call(grpc::ServerContext* ctx, const std::string& worker_id,
                                  const std::string& secret) const;
  grpc::Status Done(const char* method, const absl::Status& s) const {
    grpc::Status g = ToGrpc(s);
    if (on_done_) on_done_(method, g.error_code());
    return g;
  }
  Scheduler* scheduler_;
  RendezvousStore* rendezvous_;
  const Authenticator* auth_;
  JobServiceImpl::Observer on_done_;
};

}  // namespace topiary::server
