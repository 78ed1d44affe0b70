// topiary.v1.JobService over gRPC: a thin adapter that authenticates the
// caller, hands the request to JobManager and maps absl::Status to
// grpc::Status (the codes are the same). Workers may not use this API.
#pragma once

#include <atomic>

#include <functional>
#include <optional>
#include <string>

#include "server/jobs/job_manager.h"
#include "server/rpc/auth.h"
#include "topiary/v1/job_service.grpc.pb.h"

namespace topiary::server {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  // `on_done(method, code)` sees the outcome of every call (metrics).
  using Observer = std::function<void(const char* method, int code)>;
  JobServiceImpl(JobManager* jobs, const Authenticator* auth, Observer on_done = nullptr)
      : jobs_(jobs), auth_(auth), on_done_(std::move(on_done)) {}

  grpc::Status CreateJob(grpc::ServerContext* ctx, const v1::CreateJobRequest* req, v1::Job* resp) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* resp) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req, v1::ListJobsResponse* resp) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* resp) override;
  grpc::Status DeleteJob(grpc::ServerContext* ctx, const v1::DeleteJobRequest* req,
                         v1::DeleteJobResponse* resp) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::WatchJobResponse>* writer) override;
  grpc::Status GetJobReport(grpc::ServerContext* ctx, const v1::GetJobReportRequest* req, v1::JobReport* resp) override;

 private:
  absl::StatusOr<Principal> Caller(grpc::ServerContext* ctx) const;
  grpc::Status Done(const char* method, grpc::Status status) const {
    if (on_done_) on_done_(method, status.error_code());
    return status;
  }
  grpc::Status Create(grpc::ServerContext* ctx, const v1::CreateJobRequest* req, v1::Job* resp);
  grpc::Status Get(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* resp);
  grpc::Status List(grpc::ServerContext* ctx, const v1::ListJobsRequest* req, v1::ListJobsResponse* resp);
  grpc::Status Cancel(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* resp);
  grpc::Status Delete(grpc::ServerContext* ctx, const v1::DeleteJobRequest* req);
  grpc::Status Watch(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                     grpc::ServerWriter<v1::WatchJobResponse>* writer);
  grpc::Status Report(grpc::ServerContext* ctx, const v1::GetJobReportRequest* req, v1::JobReport* resp);
  JobManager* jobs_;
  const Authenticator* auth_;
  Observer on_done_;
};

grpc::Status ToGrpc(const absl::Status& status);

// The caller's `authorization` header, if any.
std::optional<std::string> AuthorizationHeader(const grpc::ServerContext* ctx);

}  // namespace topiary::server
