// The coordinator's side of the worker protocol: registration with a secret,
// heartbeats that acknowledge assignments and fence stale ranks, long polls
// that re-send what was not acknowledged, progress, durable completions, and
// the authorization of rendezvous keys (docs/design.md, "The worker protocol").
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <chrono>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/json_bounds.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/jobs/events.h"
#include "server/jobs/transitions.h"
#include "server/scheduler/scheduler.h"

namespace topiary::server {
namespace {

const Principal kScheduler{"scheduler", Principal::Role::kAdmin};
constexpr size_t kMaxResultBytes = 1 << 20;
constexpr int kMaxResultDepth = 32;

std::string Sha256(const std::string& text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

absl::StatusOr<std::string> NewSecret() {
  std::ifstream random("/dev/urandom", std::ios::binary);
  std::string bytes(32, '\0');
  if (!random.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) {
    return absl::InternalError("cannot read /dev/urandom for a worker secret");
  }
  return absl::BytesToHexString(bytes);
}

std::string JobOf(const std::string& task_id) { return task_id.substr(0, task_id.find('/')); }

// OK when `who` holds the secret whose digest is `secret_sha256` and is the
// principal that registered the worker. Constant-time in the secret.
absl::Status CheckWorkerSecret(const WorkerCall& who, const std::string& secret_sha256, const std::string& principal) {
  const std::string hash = Sha256(who.secret);
  if (secret_sha256.size() != hash.size() || CRYPTO_memcmp(secret_sha256.data(), hash.data(), hash.size()) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("worker ", who.worker_id, ": wrong worker secret"));
  }
  if (principal != who.principal) {
    return absl::PermissionDeniedError(absl::StrCat("worker ", who.worker_id, " was registered by another principal"));
  }
  return absl::OkStatus();
}

absl::Status NotRegistered(const WorkerCall& who) {
  return absl::NotFoundError(absl::StrCat("worker ", who.worker_id, " is not registered; register again"));
}

absl::Status LostLease(const WorkerCall& who) {
  return absl::NotFoundError(absl::StrCat("worker ", who.worker_id, " lost its lease; register again"));
}

}  // namespace

absl::StatusOr<Scheduler::Worker*> Scheduler::Authorize(const WorkerCall& who) {
  auto it = workers_.find(who.worker_id);
  if (who.worker_id.empty() || it == workers_.end()) return NotRegistered(who);
  RETURN_IF_ERROR(CheckWorkerSecret(who, it->second.secret_sha256, it->second.principal));
  return &it->second;
}

absl::Status Scheduler::RenewLease(const WorkerCall& who) {
  MutexLock lock(&lease_mu_);
  auto it = leases_.find(who.worker_id);
  if (who.worker_id.empty() || it == leases_.end()) return NotRegistered(who);
  RETURN_IF_ERROR(CheckWorkerSecret(who, it->second.secret_sha256, it->second.principal));
  if (!it->second.live) return LostLease(who);
  it->second.until = std::max(it->second.until, clock_->NowMicros() + options_.lease_micros);
  return absl::OkStatus();
}

absl::StatusOr<Scheduler::Placed*> Scheduler::PlacedRank(const WorkerCall& who, const std::string& task_id, int rank,
                                                         int attempt) {
  auto it = placed_.find(task_id);
  if (it == placed_.end() || it->second.attempt != attempt) {
    return absl::FailedPreconditionError(
        absl::StrCat("task ", task_id, " attempt ", attempt, " is not running (the task has moved on)"));
  }
  Placed& p = it->second;
  if (rank < 0 || rank >= static_cast<int>(p.ranks.size()) || p.ranks[rank].worker != who.worker_id) {
    return absl::FailedPreconditionError(
        absl::StrCat("task ", task_id, " rank ", rank, " is not assigned to worker ", who.worker_id));
  }
  return &p;
}

absl::StatusOr<v1::RegisterWorkerResponse> Scheduler::Register(const std::string& principal,
                                                               const v1::RegisterWorkerRequest& req) {
  if (req.name().empty() || req.name().size() > 253) return absl::InvalidArgumentError("name: 1 to 253 characters");
  if (req.slots() <= 0 || req.slots() > 4096) return absl::InvalidArgumentError("slots: must be in [1, 4096]");
  if (req.memory_bytes() < 0) return absl::InvalidArgumentError("memory_bytes: must not be negative");
  if (req.device_kind().size() > 32) return absl::InvalidArgumentError("device_kind: longer than 32 characters");
  ASSIGN_OR_RETURN(std::string secret, NewSecret());
  std::string id;
  {
    MutexLock lock(&mu_);
    id = absl::StrFormat("w-%x-%d", clock_->WallMicros(), next_worker_++);
    v1::WorkerRecord record;
    *record.mutable_info() = req;
    record.set_principal(principal);
    record.set_secret_sha256(Sha256(secret));
    record.set_registered_micros(clock_->WallMicros());
    StoreBatch b;
    b.put_workers.emplace_back(id, record.SerializeAsString());
    RETURN_IF_ERROR(store_->Write(b));
    Worker w;
    w.info = req;
    w.principal = principal;
    w.secret_sha256 = record.secret_sha256();
    {
      MutexLock leases(&lease_mu_);
      leases_[id] = Lease{principal, w.secret_sha256, clock_->NowMicros() + options_.lease_micros, true};
    }
    workers_[id] = std::move(w);
  }
  log::Info(absl::StrCat("scheduler: worker ", id, " (", req.name(), ", ", req.slots(), " slots, ", req.device_kind(),
                         ") registered by ", principal));
  Wake();
  v1::RegisterWorkerResponse r;
  r.set_worker_id(id);
  r.set_lease_micros(options_.lease_micros);
  r.set_secret(secret);
  return r;
}

absl::StatusOr<v1::HeartbeatResponse> Scheduler::Heartbeat(const WorkerCall& who, const v1::HeartbeatRequest& req) {
  if (req.running_size() > 100000) return absl::InvalidArgumentError("running: too many entries");
  // The lease first, under its own lock: a store write holding mu_ delays the
  // answer below but cannot make a live worker miss its lease.
  RETURN_IF_ERROR(RenewLease(who));
  // The rest (acknowledgements, stops, cancels, draining) needs mu_. When a
  // store write holds it up, the answer carries the renewed lease alone and
  // the next heartbeat brings the rest.
  if (!mu_.TryLockFor(absl::Milliseconds(kHeartbeatLockWaitMs))) {
    v1::HeartbeatResponse r;
    r.set_lease_micros(options_.lease_micros);
    return r;
  }
  absl::StatusOr<v1::HeartbeatResponse> r = HeartbeatLocked(who, req);
  mu_.Unlock();
  return r;
}

absl::StatusOr<v1::HeartbeatResponse> Scheduler::HeartbeatLocked(const WorkerCall& who,
                                                                 const v1::HeartbeatRequest& req) {
  ASSIGN_OR_RETURN(Worker * w, Authorize(who));
  if (!w->live) return LostLease(who);
  if (req.draining() && !w->draining) {
    w->draining = true;
    log::Info(absl::StrCat("scheduler: worker ", who.worker_id, " (", w->info.name(), ") is draining"));
  }
  v1::HeartbeatResponse r;
  r.set_lease_micros(options_.lease_micros);
  for (const v1::RankRef& ref : req.running()) {
    absl::StatusOr<Placed*> p = PlacedRank(who, ref.task_id(), ref.rank(), ref.attempt());
    if (!p.ok() || (*p)->ranks[ref.rank()].done) {
      *r.add_stop() = ref;  // not (or no longer) this worker's to run
      continue;
    }
    w->unacked.erase(absl::StrCat(ref.task_id(), "#", ref.rank()));  // delivered
  }
  for (const auto& [task, p] : placed_) {
    if (!p.cancelling) continue;
    for (const Rank& rank : p.ranks) {
      if (rank.worker == who.worker_id && !rank.done) {
        r.add_cancel_task_ids(task);
        break;
      }
    }
  }
  return r;
}

absl::StatusOr<std::vector<v1::Assignment>> Scheduler::Poll(const WorkerCall& who, int64_t wait_micros) {
  RETURN_IF_ERROR(RenewLease(who));
  MutexLock lock(&mu_);
  const absl::Time deadline = absl::Now() + absl::Microseconds(std::clamp<int64_t>(wait_micros, 0, 30'000'000));
  for (;;) {
    ASSIGN_OR_RETURN(Worker * w, Authorize(who));
    if (!w->live) return LostLease(who);
    RETURN_IF_ERROR(RenewLease(who));
    const int64_t now = clock_->NowMicros();
    std::vector<v1::Assignment> out;
    int64_t next_due = INT64_MAX;
    for (auto& [key, u] : w->unacked) {
      if (u.last_sent == 0 || now - u.last_sent >= options_.redeliver_micros) {
        out.push_back(u.assignment);
        u.last_sent = now;
      }
      next_due = std::min(next_due, u.last_sent + options_.redeliver_micros);
    }
    if (!out.empty()) return out;
    {
      MutexLock wl(&wake_mu_);
      if (stop_) return out;
    }
    absl::Time until = deadline;
    if (next_due != INT64_MAX)
      until = std::min(until, absl::Now() + absl::Microseconds(std::max<int64_t>(1000, next_due - now)));
    if (assigned_.WaitWithDeadline(&mu_, until) && absl::Now() >= deadline) return std::vector<v1::Assignment>();
  }
}

absl::StatusOr<bool> Scheduler::Progress(const WorkerCall& who, const v1::ReportProgressRequest& req) {
  RETURN_IF_ERROR(RenewLease(who));
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Worker * w, Authorize(who));
  ASSIGN_OR_RETURN(Placed * placed, PlacedRank(who, req.task_id(), req.rank(), req.attempt()));
  Placed& p = *placed;
  w->unacked.erase(absl::StrCat(req.task_id(), "#", req.rank()));
  if (p.cancelling) return true;
  const bool first = !p.running;
  if (req.rank() != 0 && !first) return false;  // rank 0 speaks for the task
  p.running = true;
  if (req.rank() == 0 && !req.metrics().empty()) {
    for (const auto& [k, v] : req.metrics()) {
      if (job_metrics_[p.job_id].size() < 32 || job_metrics_[p.job_id].count(k)) job_metrics_[p.job_id][k] = v;
    }
  }
  StoreBatch batch;
  batch.durable = first;  // the transition to RUNNING is kept; progress is superseded by the next report
  absl::StatusOr<v1::Job> job = jobs_->Update(
      p.job_id,
      [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
        return jobs::ReportProgress(j, p.stage, p.task, first,
                                    req.rank() == 0 && req.has_progress() ? &req.progress() : nullptr);
      },
      std::move(batch));
  if (!job.ok()) return job.status();
  return false;
}

absl::Status Scheduler::Complete(const WorkerCall& who, const v1::CompleteTaskRequest& req) {
  if (req.rank() == 0 && req.ok()) {
    RETURN_IF_ERROR(CheckJsonBounds(req.result_json(), kMaxResultBytes, kMaxResultDepth, "result_json"));
    if (!req.result_json().empty() && nlohmann::json::parse(req.result_json(), nullptr, false).is_discarded()) {
      return absl::InvalidArgumentError("result_json: not valid JSON");
    }
  }
  if (req.error().size() > 64 * 1024) return absl::InvalidArgumentError("error: longer than 64 KiB");
  MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Worker * w, Authorize(who));
  absl::StatusOr<Placed*> placed = PlacedRank(who, req.task_id(), req.rank(), req.attempt());
  if (!placed.ok()) {
    // A repeat of a completion already recorded (its answer was lost) is fine.
    absl::StatusOr<v1::Job> job = jobs_->Get(kScheduler, JobOf(req.task_id()));
    if (job.ok() && req.ok()) {
      for (const v1::Stage& s : job->stages()) {
        for (const v1::Task& t : s.tasks()) {
          if (t.id() == req.task_id() && t.attempt() == req.attempt() && t.state() == v1::TASK_SUCCEEDED) {
            return absl::OkStatus();
          }
        }
      }
    }
    return placed.status();
  }
  Placed& p = **placed;
  w->unacked.erase(absl::StrCat(req.task_id(), "#", req.rank()));
  if (p.ranks[req.rank()].done) return absl::OkStatus();  // recorded before
  // The task's training series end with it: a job that evaluates or exports
  // next has no stale tokens counter (which would read as a stalled run).
  if (req.rank() == 0) job_metrics_.erase(p.job_id);
  if (!req.ok() && !p.cancelling) {
    const v1::FailureKind kind =
        req.failure_kind() == v1::FAILURE_INFRASTRUCTURE ? v1::FAILURE_INFRASTRUCTURE : v1::FAILURE_TASK;
    FailTask(req.task_id(), kind, req.error().empty() ? "failed without a message" : req.error());
    return absl::OkStatus();
  }
  return CompleteRank(req.task_id(), req.rank(), req.ok() ? req.result_json() : "");
}

absl::Status Scheduler::CompleteRank(const std::string& task_id, int rank, const std::string& result_json) {
  Placed& p = placed_.at(task_id);
  bool all_done = true;
  for (int r = 0; r < static_cast<int>(p.ranks.size()); ++r) all_done = all_done && (r == rank || p.ranks[r].done);
  if (rank == 0) p.result_json = result_json;
  if (p.cancelling) {  // a rank that stopped for a cancellation
    Rank& me = p.ranks[rank];
    auto wi = workers_.find(me.worker);
    if (wi != workers_.end() && wi->second.live) wi->second.used = std::max(0, wi->second.used - p.slots_per_rank);
    me.done = true;
    if (all_done) {  // this task has stopped; the job ends once none of its tasks runs
      const std::string job_id = p.job_id;
      EndAttempt(task_id, p);
      placed_.erase(task_id);
      bool others = false;
      for (const auto& [id, q] : placed_) others = others || q.job_id == job_id;
      if (!others) FinishCancelled(job_id);
      Wake();
    }
    return absl::OkStatus();
  }
  const Placed done = p;
  jobs::RankDone rd;
  rd.stage = done.stage;
  rd.task = done.task;
  rd.rank = rank;
  rd.last = all_done;
  rd.result_json = result_json;
  rd.jobs_root = absl::StrCat(options_.storage_root, "/jobs");
  jobs::RankDoneOutcome out;
  absl::StatusOr<v1::Job> job = jobs_->Update(done.job_id, [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
    return jobs::CompleteRank(j, rd, clock_->WallMicros(), &out);
  });
  if (!job.ok()) return job.status();  // nothing recorded: the worker retries
  if (out.cancelled) {
    p.cancelling = true;
    return CompleteRank(task_id, rank, result_json);  // the cancellation path: the job ends CANCELLED
  }
  Rank& me = p.ranks[rank];
  auto wi = workers_.find(me.worker);
  if (wi != workers_.end() && wi->second.live) wi->second.used = std::max(0, wi->second.used - p.slots_per_rank);
  me.done = true;
  if (all_done) {
    EndAttempt(task_id, p);
    placed_.erase(task_id);
  }
  if (out.stage_seconds >= 0) {
    const std::string& name = job->stages(done.stage).name();
    stage_seconds_.emplace_back(name.substr(0, name.find('-')), out.stage_seconds);
  }
  if (out.job_finished) Forget(done.job_id);
  Wake();
  return absl::OkStatus();
}

absl::Status Scheduler::CheckRendezvous(const WorkerCall& who, const std::string& task_id, int attempt) {
  MutexLock lock(&mu_);
  RETURN_IF_ERROR(Authorize(who).status());
  auto it = placed_.find(task_id);
  if (it == placed_.end() || it->second.attempt != attempt) {
    return absl::FailedPreconditionError(absl::StrCat("task ", task_id, " attempt ", attempt, " is not running"));
  }
  for (const Rank& r : it->second.ranks) {
    if (r.worker == who.worker_id) return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat("task ", task_id, " has no rank on worker ", who.worker_id));
}

}  // namespace topiary::server
