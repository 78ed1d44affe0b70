#include "server/rpc/job_service.h"

#include "absl/strings/str_cat.h"

namespace topiary::server {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

std::optional<std::string> AuthorizationHeader(const grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return std::nullopt;
  return std::string(it->second.data(), it->second.size());
}

absl::StatusOr<Principal> JobServiceImpl::Caller(grpc::ServerContext* ctx) const {
  absl::StatusOr<Principal> p = auth_->Authenticate(AuthorizationHeader(ctx));
  if (p.ok() && p->role == Principal::Role::kWorker) {
    return absl::PermissionDeniedError("a worker token cannot use the job API");
  }
  return p;
}

#define TOPIARY_CALLER(ctx)                         \
  absl::StatusOr<Principal> who_or = Caller(ctx);   \
  if (!who_or.ok()) return ToGrpc(who_or.status()); \
  const Principal& who = *who_or

grpc::Status JobServiceImpl::Create(grpc::ServerContext* ctx, const v1::CreateJobRequest* req, v1::Job* resp) {
  TOPIARY_CALLER(ctx);
  absl::StatusOr<v1::Job> job = jobs_->Create(who, req->spec(), req->request_id());
  if (!job.ok()) return ToGrpc(job.status());
  *resp = std::move(*job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::Get(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* resp) {
  TOPIARY_CALLER(ctx);
  absl::StatusOr<v1::Job> job = jobs_->Get(who, req->id());
  if (!job.ok()) return ToGrpc(job.status());
  *resp = std::move(*job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::List(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                                  v1::ListJobsResponse* resp) {
  TOPIARY_CALLER(ctx);
  JobManager::ListRequest r;
  r.page_size = req->page_size();
  r.page_token = req->page_token();
  for (int s : req->states()) r.states.push_back(static_cast<v1::JobState>(s));
  for (const auto& [k, v] : req->labels()) r.labels[k] = v;
  absl::StatusOr<JobManager::ListResponse> out = jobs_->List(who, r);
  if (!out.ok()) return ToGrpc(out.status());
  for (v1::Job& j : out->jobs) *resp->add_jobs() = std::move(j);
  resp->set_next_page_token(out->next_page_token);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::Cancel(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* resp) {
  TOPIARY_CALLER(ctx);
  absl::StatusOr<v1::Job> job = jobs_->Cancel(who, req->id());
  if (!job.ok()) return ToGrpc(job.status());
  *resp = std::move(*job);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::Delete(grpc::ServerContext* ctx, const v1::DeleteJobRequest* req) {
  TOPIARY_CALLER(ctx);
  return ToGrpc(jobs_->Delete(who, req->id()));
}

grpc::Status JobServiceImpl::Watch(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                   grpc::ServerWriter<v1::WatchJobResponse>* writer) {
  TOPIARY_CALLER(ctx);
  absl::StatusOr<JobManager::WatchSlot> slot = jobs_->OpenWatch(who);
  if (!slot.ok()) return ToGrpc(slot.status());
  absl::StatusOr<v1::Job> job = jobs_->Get(who, req->id());
  if (!job.ok()) return ToGrpc(job.status());
  v1::WatchJobResponse first;
  *first.mutable_job() = *job;
  if (!writer->Write(first)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  int64_t after = req->from_seq();
  for (;;) {
    if (ctx->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    absl::StatusOr<std::vector<v1::Event>> events = jobs_->WaitEvents(who, req->id(), after, 500);
    if (!events.ok()) return ToGrpc(events.status());
    for (v1::Event& e : *events) {
      after = e.seq();
      v1::WatchJobResponse r;
      *r.mutable_event() = std::move(e);
      if (!writer->Write(r)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    }
    if (events->empty()) {  // nothing new: done when the job has finished
      absl::StatusOr<v1::Job> now = jobs_->Get(who, req->id());
      if (!now.ok()) return ToGrpc(now.status());
      if (IsTerminal(now->state()) && now->last_event_seq() <= after) return grpc::Status::OK;
    }
  }
}

grpc::Status JobServiceImpl::Report(grpc::ServerContext* ctx, const v1::GetJobReportRequest* req, v1::JobReport* resp) {
  TOPIARY_CALLER(ctx);
  absl::StatusOr<v1::JobReport> r = jobs_->Report(who, req->id());
  if (!r.ok()) return ToGrpc(r.status());
  *resp = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::CreateJob(grpc::ServerContext* ctx, const v1::CreateJobRequest* req, v1::Job* resp) {
  return Done("CreateJob", Create(ctx, req, resp));
}
grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* resp) {
  return Done("GetJob", Get(ctx, req, resp));
}
grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                                      v1::ListJobsResponse* resp) {
  return Done("ListJobs", List(ctx, req, resp));
}
grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* resp) {
  return Done("CancelJob", Cancel(ctx, req, resp));
}
grpc::Status JobServiceImpl::DeleteJob(grpc::ServerContext* ctx, const v1::DeleteJobRequest* req,
                                       v1::DeleteJobResponse*) {
  return Done("DeleteJob", Delete(ctx, req));
}
grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                      grpc::ServerWriter<v1::WatchJobResponse>* writer) {
  return Done("WatchJob", Watch(ctx, req, writer));
}
grpc::Status JobServiceImpl::GetJobReport(grpc::ServerContext* ctx, const v1::GetJobReportRequest* req,
                                          v1::JobReport* resp) {
  return Done("GetJobReport", Report(ctx, req, resp));
}

}  // namespace topiary::server
