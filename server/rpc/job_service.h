// topiary.v1.JobService over gRPC: a thin adapter that authenticates the
// caller, hands the request to JobManager and maps absl::Status to
// grpc::Status (the codes are the same). Workers may not use this API.
#pragma once

#include <atomic>

#include "server/jobs/job_manager.h"
#include "server/rpc/auth.h"
#include "topiary/v1/job_service.grpc.pb.h"

namespace topiary::server {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(JobManager* jobs, const Authenticator* auth) : jobs_(jobs), auth_(auth) {}

  grpc::Status CreateJob(grpc::ServerContext* ctx, const v1::CreateJobRequest* req, v1::Job* resp) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* resp) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                        v1::ListJobsResponse* resp) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* resp) override;
  grpc::Status DeleteJob(grpc::ServerContext* ctx, const v1::DeleteJobRequest* req,
                         v1::DeleteJobResponse* resp) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::WatchJobResponse>* writer) override;
  grpc::Status GetJobReport(grpc::ServerContext* ctx, const v1::GetJobReportRequest* req,
                            v1::JobReport* resp) override;

 private:
  absl::StatusOr<Principal> Caller(grpc::ServerContext* ctx) const;
  JobManager* jobs_;
  const Authenticator* auth_;
};

grpc::Status ToGrpc(const absl::Status& status);

}  // namespace topiary::server
