#include "server/jobs/job_manager.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/report/job_report.h"
#include "common/spec/stages.h"
#include "common/status_macros.h"

namespace topiary::server {
namespace {

std::string IdempotencyKey(const std::string& owner, const std::string& request_id) {
  return absl::StrCat(owner, std::string(1, '\0'), request_id);
}

bool Owns(const Principal& who, const v1::Job& job) {
  return who.role == Principal::Role::kAdmin || job.owner() == who.name;
}

}  // namespace

bool IsTerminal(v1::JobState s) { return s == v1::JOB_SUCCEEDED || s == v1::JOB_FAILED || s == v1::JOB_CANCELLED; }

const char* WaitingReasonClass(const std::string& r) {
  // The scheduler's wording (server/scheduler/scheduler.cc, PlaceTask).
  if (r.empty() || r == "waiting for the scheduler") return "scheduler";
  if (absl::StartsWith(r, "waiting for a worker")) return "no_worker";
  if (absl::StartsWith(r, "unschedulable")) return "unschedulable";
  if (absl::StartsWith(r, "retrying")) return "retry_backoff";
  if (absl::StartsWith(r, "waiting for ")) return "slots";
  return "other";
}

const std::vector<std::string>& WaitingReasonClasses() {
  static const std::vector<std::string> kClasses = {"scheduler",     "no_worker",     "slots",
                                                    "unschedulable", "retry_backoff", "other"};
  return kClasses;
}

JobManager::JobManager(Store* store, const Clock* clock, JobManagerOptions options)
    : store_(store), clock_(clock), options_(std::move(options)) {}

Mutex& JobManager::JobLock(const std::string& id) { return job_locks_[LockStripe(id)]; }

absl::Status JobManager::Recover() {
  std::map<v1::JobState, int64_t> counts;
  std::map<std::string, int64_t> queued_by_owner;
  std::map<std::string, const char*> queued_reason;
  int64_t last_id_micros = 0;
  bool first = true;
  RETURN_IF_ERROR(store_->ScanJobs("", [&](const v1::Job& j) {
    if (first) {
      unsigned long long micros = 0;
      if (sscanf(j.id().c_str(), "job-%16llx", &micros) == 1) last_id_micros = static_cast<int64_t>(micros);
      first = false;
    }
    ++counts[j.state()];
    if (j.state() == v1::JOB_QUEUED) {
      ++queued_by_owner[j.owner()];
      queued_reason[j.id()] = WaitingReasonClass(j.waiting_reason());
    }
    return true;
  }));
  MutexLock lock(&mu_);
  counts_ = std::move(counts);
  queued_by_owner_ = std::move(queued_by_owner);
  queued_reason_ = std::move(queued_reason);
  last_id_micros_ = std::max(last_id_micros_, last_id_micros);
  return absl::OkStatus();
}

std::string JobManager::NextId() {
  last_id_micros_ = std::max(last_id_micros_ + 1, clock_->WallMicros());
  // Time-ordered, and distinct across coordinators that share a storage root.
  return absl::StrFormat("job-%016x-%04x", last_id_micros_, id_suffix_(rng_));
}

absl::Status JobManager::Commit(v1::Job& job, v1::JobState before, std::vector<v1::Event> events, StoreBatch batch) {
  const int64_t now = clock_->WallMicros();
  for (v1::Event& e : events) {
    e.set_job_id(job.id());
    e.set_seq(job.last_event_seq() + 1);
    e.set_time_micros(now);
    job.set_last_event_seq(e.seq());
  }
  job.set_update_time_micros(now);
  batch.put_jobs.push_back(job);
  batch.events = std::move(events);
  RETURN_IF_ERROR(store_->Write(batch));  // the sync happens here, under the job's stripe only
  MutexLock lock(&mu_);
  Count(job, before);
  WakeWatchers(job.id());
  return absl::OkStatus();
}

void JobManager::Count(const v1::Job& job, v1::JobState before) {
  if (before != v1::JOB_STATE_UNSPECIFIED) --counts_[before];
  ++counts_[job.state()];
  if (before == v1::JOB_QUEUED && job.state() != v1::JOB_QUEUED && --queued_by_owner_[job.owner()] <= 0) {
    queued_by_owner_.erase(job.owner());
  }
  if (job.state() == v1::JOB_QUEUED)
    queued_reason_[job.id()] = WaitingReasonClass(job.waiting_reason());
  else if (before == v1::JOB_QUEUED)
    queued_reason_.erase(job.id());
}

void JobManager::WakeWatchers(const std::string& id) {
  if (auto w = waiters_.find(id); w != waiters_.end()) w->second.cv.SignalAll();  // its watchers only
}

absl::StatusOr<v1::Job> JobManager::Update(const std::string& id, const Mutation& fn, StoreBatch extra) {
  MutexLock job_lock(&JobLock(id));
  ASSIGN_OR_RETURN(std::optional<v1::Job> job, store_->GetJob(id));
  if (!job.has_value()) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  const v1::JobState before = job->state();
  ASSIGN_OR_RETURN(std::vector<v1::Event> events, fn(*job));
  RETURN_IF_ERROR(Commit(*job, before, std::move(events), std::move(extra)));
  return *job;
}

absl::StatusOr<v1::Job> JobManager::Create(const Principal& who, const v1::JobSpec& given,
                                           const std::string& request_id) {
  absl::StatusOr<v1::Job> job = CreateJob(who, given, request_id);
  if (job.ok() && listener_) listener_(job->id());
  return job;
}

absl::StatusOr<v1::Job> JobManager::CreateJob(const Principal& who, const v1::JobSpec& given,
                                              const std::string& request_id) {
  RETURN_IF_ERROR(spec::ValidateJobSpec(given, options_.storage_roots, options_.limits));
  v1::JobSpec spec = given;  // with defaults, as stored
  if (spec.resources().ranks() == 0) spec.mutable_resources()->set_ranks(1);
  if (spec.resources().slots_per_rank() == 0) spec.mutable_resources()->set_slots_per_rank(1);
  if (request_id.size() > 128) return absl::InvalidArgumentError("request_id: longer than 128 characters");
  const std::string key = request_id.empty() ? "" : IdempotencyKey(who.name, request_id);
  v1::Job job;
  {
    MutexLock lock(&mu_);
    if (!key.empty()) {
      while (creating_.count(key) != 0) changed_.Wait(&mu_);  // one create per key at a time
      ASSIGN_OR_RETURN(std::optional<std::string> existing, store_->GetKey(key));
      if (existing.has_value()) {
        ASSIGN_OR_RETURN(std::optional<v1::Job> prior, store_->GetJob(*existing));
        if (prior.has_value()) {
          if (!google::protobuf::util::MessageDifferencer::Equals(prior->spec(), spec)) {
            return absl::AlreadyExistsError(absl::StrCat("request_id: '", request_id, "' was used for job ",
                                                         prior->id(), " with a different spec"));
          }
          return *prior;
        }
      }
    }
    const int64_t queued = counts_[v1::JOB_QUEUED] + creating_count_;
    if (queued >= options_.max_queued) {
      return absl::ResourceExhaustedError(
          absl::StrCat("queue full: ", queued, " jobs queued (limit ", options_.max_queued, ")"));
    }
    if (queued_by_owner_[who.name] >= options_.max_queued_per_user) {
      return absl::ResourceExhaustedError(absl::StrCat(who.name, " has ", queued_by_owner_[who.name],
                                                       " jobs queued (the limit per user is ",
                                                       options_.max_queued_per_user, ")"));
    }
    ++queued_by_owner_[who.name];
    job.set_id(NextId());
    if (!key.empty()) creating_.insert(key);
    ++creating_count_;
  }
  const int64_t now = clock_->WallMicros();
  job.set_owner(who.name);
  *job.mutable_spec() = spec;
  job.set_state(v1::JOB_QUEUED);
  job.set_waiting_reason("waiting for the scheduler");
  job.set_create_time_micros(now);
  job.set_update_time_micros(now);
  job.set_request_id(request_id);
  job.set_last_event_seq(1);
  for (const std::string& name : spec::StageNames(spec)) {
    v1::Stage* st = job.add_stages();
    st->set_name(name);
    st->set_state(v1::STAGE_PENDING);
  }
  StoreBatch batch;
  v1::Event e;
  e.set_job_id(job.id());
  e.set_seq(1);
  e.set_time_micros(now);
  e.set_kind(v1::EVENT_KIND_JOB_STATE);
  e.set_job_state(v1::JOB_QUEUED);
  e.set_message("created");
  batch.events.push_back(e);
  batch.put_jobs.push_back(job);
  if (!key.empty()) batch.put_keys.emplace_back(key, job.id());
  // Written outside the lock: concurrent creates share RocksDB's group
  // commit (one fsync for many jobs) instead of queueing for one each.
  const absl::Status written = store_->Write(batch);
  {
    MutexLock lock(&mu_);
    if (!key.empty()) creating_.erase(key);
    --creating_count_;
    if (written.ok()) ++counts_[v1::JOB_QUEUED], created_.fetch_add(1);
    if (!written.ok() && --queued_by_owner_[who.name] <= 0) queued_by_owner_.erase(who.name);
    changed_.SignalAll();
  }
  if (!written.ok()) return written;
  return job;
}

absl::StatusOr<v1::Job> JobManager::Visible(const Principal& who, const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("id: required");
  ASSIGN_OR_RETURN(std::optional<v1::Job> job, store_->GetJob(id));
  if (!job.has_value() || !Owns(who, *job)) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  return *job;
}

absl::StatusOr<v1::Job> JobManager::Get(const Principal& who, const std::string& id) { return Visible(who, id); }

absl::StatusOr<JobManager::ListResponse> JobManager::List(const Principal& who, const ListRequest& r) {
  if (r.page_size < 0) return absl::InvalidArgumentError("page_size: must not be negative");
  const int size = r.page_size == 0 ? 50 : std::min(r.page_size, 1000);
  std::string after;
  if (!r.page_token.empty()) {
    if (!absl::WebSafeBase64Unescape(r.page_token, &after) || after.rfind("job-", 0) != 0) {
      return absl::InvalidArgumentError("page_token: not a token this server issued");
    }
  }
  ListResponse out;
  std::string last;
  bool more = false;
  size_t bytes = 0;
  auto visit = [&](const v1::Job& j) {
    ++out.scanned;
    if (!Owns(who, j)) return true;
    if (!r.states.empty() && std::find(r.states.begin(), r.states.end(), j.state()) == r.states.end()) return true;
    for (const auto& [k, v] : r.labels) {
      auto it = j.spec().labels().find(k);
      if (it == j.spec().labels().end() || it->second != v) return true;
    }
    if (static_cast<int>(out.jobs.size()) == size ||
        (!out.jobs.empty() && bytes + j.ByteSizeLong() > options_.max_list_bytes)) {
      more = true;
      return false;
    }
    bytes += j.ByteSizeLong();
    out.jobs.push_back(j);
    last = j.id();
    return true;
  };
  if (who.role != Principal::Role::kAdmin) {
    RETURN_IF_ERROR(store_->ScanJobsOf(who.name, after, visit));  // only this owner's jobs are read
  } else if (r.states.size() == 1) {
    RETURN_IF_ERROR(store_->ScanJobsIn(r.states[0], after, visit));
  } else {
    RETURN_IF_ERROR(store_->ScanJobs(after, visit));
  }
  if (more) out.next_page_token = absl::WebSafeBase64Escape(last);
  return out;
}

absl::StatusOr<v1::Job> JobManager::Cancel(const Principal& who, const std::string& id) {
  absl::StatusOr<v1::Job> job = CancelJob(who, id);
  if (job.ok() && listener_) listener_(job->id());
  return job;
}

absl::StatusOr<v1::Job> JobManager::CancelJob(const Principal& who, const std::string& id) {
  MutexLock job_lock(&JobLock(id));
  ASSIGN_OR_RETURN(v1::Job job, Visible(who, id));
  const v1::JobState before = job.state();
  if (IsTerminal(before)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " already finished (", v1::JobState_Name(before), ")"));
  }
  if (before == v1::JOB_CANCELLING) return job;
  std::vector<v1::Event> events;
  if (before == v1::JOB_QUEUED) {
    job.set_state(v1::JOB_CANCELLED);
    job.clear_waiting_reason();
    for (v1::Stage& s : *job.mutable_stages()) {
      if (s.state() == v1::STAGE_PENDING) s.set_state(v1::STAGE_CANCELLED);
    }
  } else {
    job.set_state(v1::JOB_CANCELLING);
  }
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_JOB_STATE);
  e.set_job_state(job.state());
  e.set_message(absl::StrCat("cancelled by ", who.name));
  events.push_back(e);
  RETURN_IF_ERROR(Commit(job, before, std::move(events)));
  return job;
}

absl::Status JobManager::Delete(const Principal& who, const std::string& id) {
  MutexLock job_lock(&JobLock(id));
  ASSIGN_OR_RETURN(v1::Job job, Visible(who, id));
  if (!IsTerminal(job.state())) {
    return absl::FailedPreconditionError(absl::StrCat("job ", id, " is ", v1::JobState_Name(job.state()),
                                                      "; cancel it and wait for it to finish first"));
  }
  StoreBatch b;
  b.delete_jobs.push_back(id);
  if (!job.request_id().empty()) b.delete_keys.push_back(IdempotencyKey(job.owner(), job.request_id()));
  RETURN_IF_ERROR(store_->Write(b));
  MutexLock lock(&mu_);
  --counts_[job.state()];
  WakeWatchers(id);  // they see NOT_FOUND
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Event>> JobManager::WaitEvents(const Principal& who, const std::string& id,
                                                              int64_t after, int64_t wait_ms) {
  if (after < 0) return absl::InvalidArgumentError("from_seq: must not be negative");
  const absl::Time deadline = absl::Now() + absl::Milliseconds(wait_ms);
  MutexLock lock(&mu_);
  Waiters& w = waiters_[id];
  ++w.count;
  struct Leave {
    JobManager* m;
    const std::string& id;
    ~Leave() ABSL_NO_THREAD_SAFETY_ANALYSIS {  // runs inside the MutexLock's scope
      auto it = m->waiters_.find(id);
      if (it != m->waiters_.end() && --it->second.count == 0) m->waiters_.erase(it);
    }
  } leave{this, id};
  for (;;) {
    if (shutdown_) return absl::UnavailableError("the coordinator is shutting down; reconnect with from_seq");
    ASSIGN_OR_RETURN(v1::Job job, Visible(who, id));
    if (job.last_event_seq() > after) return store_->Events(id, after, 1000);
    if (IsTerminal(job.state())) return std::vector<v1::Event>();
    if (w.cv.WaitWithDeadline(&mu_, deadline)) return std::vector<v1::Event>();  // timed out
  }
}

absl::StatusOr<int> JobManager::DeleteExpired() {
  const int64_t cutoff = clock_->WallMicros() - options_.retention_micros;
  std::vector<std::string> expired;
  for (v1::JobState s : {v1::JOB_SUCCEEDED, v1::JOB_FAILED, v1::JOB_CANCELLED}) {
    RETURN_IF_ERROR(store_->ScanJobsIn(s, "", [&](const v1::Job& j) {
      if (j.update_time_micros() < cutoff) expired.push_back(j.id());
      return expired.size() < 10000;  // a bounded sweep; the next one takes the rest
    }));
  }
  int deleted = 0;
  for (const std::string& id : expired) {
    absl::Status st = Delete(Principal{"retention", Principal::Role::kAdmin}, id);
    if (st.ok()) ++deleted;
  }
  return deleted;
}

absl::StatusOr<JobManager::WatchSlot> JobManager::OpenWatch(const Principal& who) {
  MutexLock lock(&mu_);
  if (shutdown_) return absl::UnavailableError("the coordinator is shutting down");
  if (watches_total_ >= options_.max_watches) {
    return absl::ResourceExhaustedError(absl::StrCat(watches_total_, " watch streams are open (the limit)"));
  }
  if (watches_[who.name] >= options_.max_watches_per_user) {
    return absl::ResourceExhaustedError(
        absl::StrCat(who.name, " has ", watches_[who.name], " watch streams open (the limit per user)"));
  }
  ++watches_[who.name];
  ++watches_total_;
  return WatchSlot(this, who.name);
}

JobManager::WatchSlot::~WatchSlot() {
  if (jobs_ == nullptr) return;
  MutexLock lock(&jobs_->mu_);
  if (--jobs_->watches_[who_] == 0) jobs_->watches_.erase(who_);
  --jobs_->watches_total_;
}

absl::StatusOr<v1::JobReport> JobManager::Report(const Principal& who, const std::string& id) {
  ASSIGN_OR_RETURN(v1::Job job, Visible(who, id));
  if (!IsTerminal(job.state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", id, " is ", v1::JobState_Name(job.state()), "; the report is written when it finishes"));
  }
  const std::string dir = absl::StrCat(options_.jobs_root, "/", job.id());
  v1::JobReport out;
  out.set_job_id(job.id());
  out.set_report_json(report::BuildReport(job, dir).dump(2));
  out.set_output_path(job.output_path());
  out.set_report_dir(dir);
  return out;
}

absl::Status JobManager::WriteReportFiles(const std::string& id) {
  ASSIGN_OR_RETURN(std::optional<v1::Job> job, store_->GetJob(id));
  if (!job.has_value() || !IsTerminal(job->state()) || options_.jobs_root.empty()) return absl::OkStatus();
  const std::string dir = absl::StrCat(options_.jobs_root, "/", id);
  const nlohmann::json r = report::BuildReport(*job, dir);
  RETURN_IF_ERROR(MakeDirs(dir));
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/report.json", r.dump(2)));
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/report.md", report::RenderMarkdown(r)));
  return WriteFileAtomically(dir + "/report.html", report::RenderHtml(r));
}

std::map<v1::JobState, int64_t> JobManager::CountByState() {
  MutexLock lock(&mu_);
  return counts_;
}

std::map<std::string, int64_t> JobManager::CountQueuedByReason() {
  MutexLock lock(&mu_);
  std::map<std::string, int64_t> counts;
  for (const auto& [id, reason] : queued_reason_) ++counts[reason];
  return counts;
}

void JobManager::Shutdown() {
  MutexLock lock(&mu_);
  shutdown_ = true;
  changed_.SignalAll();
  for (auto& [id, w] : waiters_) w.cv.SignalAll();
}

}  // namespace topiary::server
