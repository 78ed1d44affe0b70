#include "server/scheduler/scheduler.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/spec/stages.h"
#include "common/status_macros.h"
#include "server/jobs/events.h"
#include "server/jobs/transitions.h"

namespace topiary::server {
namespace {

const Principal kScheduler{"scheduler", Principal::Role::kAdmin};
using jobs::CurrentStage;
using jobs::TaskId;

int TaskCount(const v1::Job& job, int stage) { return spec::TaskCount(job.spec().stages(stage)); }

int64_t Backoff(const SchedulerOptions& o, int retry) {
  int64_t b = o.backoff_micros;
  for (int i = 1; i < retry && b < o.max_backoff_micros; ++i) b *= 2;
  return std::min(b, o.max_backoff_micros);
}

}  // namespace

Scheduler::Scheduler(JobManager* jobs, Store* store, const Clock* clock, SchedulerOptions options,
                     RendezvousStore* rendezvous)
    : jobs_(jobs), store_(store), clock_(clock), options_(std::move(options)), rendezvous_(rendezvous) {}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Forget(const std::string& job_id) {
  if (ended_ && active_.count(job_id)) ended_(job_id);
  active_.erase(job_id);
  job_metrics_.erase(job_id);
  const std::string prefix = job_id + "/";
  for (auto it = not_before_.lower_bound(prefix); it != not_before_.end() && it->first.rfind(prefix, 0) == 0;) {
    it = not_before_.erase(it);
  }
  if (rendezvous_ != nullptr) rendezvous_->DropJob(job_id);
}

void Scheduler::EndAttempt(const std::string& task_id, const Placed& p) {
  for (const Rank& r : p.ranks) {
    auto w = workers_.find(r.worker);
    if (w == workers_.end()) continue;
    for (auto it = w->second.unacked.begin(); it != w->second.unacked.end();) {
      it = it->second.assignment.task_id() == task_id ? w->second.unacked.erase(it) : std::next(it);
    }
  }
  if (rendezvous_ != nullptr) rendezvous_->DropTask(task_id);
}

v1::Assignment Scheduler::MakeAssignment(const v1::Job& j, int stage, const v1::Task& t, int rank) const {
  v1::Assignment a;
  a.set_job_id(j.id());
  a.set_task_id(t.id());
  a.set_stage(j.stages(stage).name());
  a.set_rank(rank);
  a.set_world_size(t.ranks());
  a.set_attempt(t.attempt());
  *a.mutable_spec() = j.spec();
  a.set_storage_dir(absl::StrCat(options_.storage_root, "/jobs/", j.id(), "/", j.stages(stage).name()));
  a.set_task_index(t.index());
  a.set_stage_index(stage);
  for (const v1::Stage& s : j.stages()) a.add_stage_names(s.name());
  for (const std::string& root : options_.storage_roots) a.add_storage_roots(root);
  for (int k = 0; k < stage; ++k) {
    if (!j.stages(k).result_json().empty())
      (*a.mutable_stage_results())[j.stages(k).name()] = j.stages(k).result_json();
  }
  return a;
}

absl::Status Scheduler::Recover() {
  MutexLock lock(&mu_);
  const int64_t now = clock_->NowMicros();
  ASSIGN_OR_RETURN(auto workers, store_->Workers());
  for (const auto& [id, blob] : workers) {
    v1::WorkerRecord record;
    if (!record.ParseFromString(blob) || record.secret_sha256().empty()) {
      log::Warn(absl::StrCat("scheduler: worker ", id, " has no usable record; it must register again"));
      continue;
    }
    Worker w;
    w.info = record.info();
    w.principal = record.principal();
    w.secret_sha256 = record.secret_sha256();
    w.lost_wall = record.lost_micros();
    w.live = w.lost_wall == 0;  // a worker lost before the restart stays lost
    {
      MutexLock leases(&lease_mu_);
      leases_[id] =
          Lease{w.principal, w.secret_sha256,
                now + (options_.recovery_grace_micros > 0 ? options_.recovery_grace_micros : 3 * options_.lease_micros),
                w.live};
    }
    workers_[id] = std::move(w);
  }
  std::vector<v1::Job> active;
  RETURN_IF_ERROR(store_->ScanJobs("", [&](const v1::Job& j) {
    if (!IsTerminal(j.state())) active.push_back(j);
    return true;
  }));
  for (const v1::Job& j : active) {
    active_.insert(j.id());
    const int s = CurrentStage(j);
    if (s < 0) continue;
    for (int i = 0; i < j.stages(s).tasks_size(); ++i) {
      const v1::Task& t = j.stages(s).tasks(i);
      if (t.state() != v1::TASK_ASSIGNED && t.state() != v1::TASK_RUNNING) continue;
      Placed p;
      p.job_id = j.id();
      p.stage = s;
      p.task = i;
      p.attempt = t.attempt();
      p.result_json = t.result_json();
      p.slots_per_rank = std::max(1, j.spec().resources().slots_per_rank());
      p.running = t.state() == v1::TASK_RUNNING;
      bool known = true;
      for (int r = 0; r < t.workers_size(); ++r) {
        const bool done = std::find(t.done_ranks().begin(), t.done_ranks().end(), r) != t.done_ranks().end();
        p.ranks.push_back({t.workers(r), done});
        auto w = workers_.find(t.workers(r));
        if (w == workers_.end()) {
          known = known && done;
          continue;
        }
        if (done) continue;
        w->second.used += p.slots_per_rank;
        // Re-sent until the worker's heartbeat lists it (it ignores what it already runs).
        w->second.unacked[absl::StrCat(t.id(), "#", r)] = {MakeAssignment(j, s, t, r), 0};
      }
      placed_[t.id()] = p;
      if (!known) FailTask(t.id(), v1::FAILURE_INFRASTRUCTURE, "a worker of this task is unknown after a restart");
    }
  }
  log::Info(absl::StrCat("scheduler: ", workers_.size(), " workers, ", active_.size(), " active jobs, ", placed_.size(),
                         " placed tasks recovered"));
  return absl::OkStatus();
}

void Scheduler::Start() {
  thread_ = std::thread([this] {
    for (;;) {
      {
        MutexLock lock(&wake_mu_);
        if (!dirty_ && !stop_) wake_.WaitWithTimeout(&wake_mu_, absl::Milliseconds(100));
        if (stop_) return;
        dirty_ = false;
      }
      RunOnce();
    }
  });
}

void Scheduler::Stop() {
  {
    MutexLock lock(&wake_mu_);
    stop_ = true;
  }
  wake_.SignalAll();
  if (thread_.joinable()) thread_.join();
  MutexLock lock(&mu_);
  assigned_.SignalAll();
}

void Scheduler::Wake() {
  {
    MutexLock lock(&wake_mu_);
    dirty_ = true;
  }
  wake_.SignalAll();
}

void Scheduler::Notify(const std::string& job_id) {
  {
    MutexLock lock(&mu_);
    active_.insert(job_id);
  }
  Wake();
}

void Scheduler::RunOnce() {
  MutexLock lock(&mu_);
  const int64_t now = clock_->NowMicros();
  // A pass that comes late means this coordinator stalled (a slow sync held the lock, the process was
  // paused): heartbeats could not be answered meanwhile, so the stall does not count against leases.
  if (last_pass_ > 0 && now - last_pass_ > options_.lease_micros / 2) {
    const int64_t stall = now - last_pass_;
    log::Warn(absl::StrCat("scheduler: ", stall / 1000, " ms since the last pass; leases extended by as much"));
    MutexLock leases(&lease_mu_);
    for (auto& [id, l] : leases_) {
      if (l.live) l.until += stall;
    }
  }
  last_pass_ = now;
  ExpireLeases(now);
  ForgetLostWorkers();
  PlaceJobs(now);
}

absl::Status Scheduler::PersistWorker(const std::string& id, const Worker& w) {
  v1::WorkerRecord record;
  *record.mutable_info() = w.info;
  record.set_principal(w.principal);
  record.set_secret_sha256(w.secret_sha256);
  record.set_lost_micros(w.lost_wall);
  StoreBatch b;
  b.put_workers.emplace_back(id, record.SerializeAsString());
  return store_->Write(b);
}

void Scheduler::ForgetLostWorkers() {
  const int64_t wall = clock_->WallMicros();
  StoreBatch b;
  for (auto it = workers_.begin(); it != workers_.end();) {
    const Worker& w = it->second;
    if (w.live || wall - w.lost_wall < options_.forget_lost_micros) {  // the common case: no scan of placed_
      ++it;
      continue;
    }
    bool holds = false;
    for (const auto& [task, p] : placed_) {
      for (const Rank& r : p.ranks) holds = holds || (r.worker == it->first && !r.done);
    }
    if (!holds) {
      log::Info(absl::StrCat("scheduler: forgetting worker ", it->first, " (", w.info.name(), "), lost ",
                             (wall - w.lost_wall) / 1000000, "s ago"));
      b.delete_workers.push_back(it->first);
      {
        MutexLock leases(&lease_mu_);
        leases_.erase(it->first);
      }
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
  if (!b.delete_workers.empty()) {
    if (absl::Status st = store_->Write(b); !st.ok())
      log::Warn(absl::StrCat("scheduler: forget workers: ", st.message()));
  }
}

void Scheduler::Release(Placed& p) {
  for (Rank& r : p.ranks) {
    if (r.done) continue;
    auto w = workers_.find(r.worker);
    if (w != workers_.end() && w->second.live) w->second.used = std::max(0, w->second.used - p.slots_per_rank);
    r.done = true;
  }
}

void Scheduler::ExpireLeases(int64_t now) {
  std::vector<std::string> expired;
  {
    MutexLock leases(&lease_mu_);
    for (auto& [id, l] : leases_) {
      if (l.live && l.until < now) {
        l.live = false;
        expired.push_back(id);
      }
    }
  }
  for (const std::string& id : expired) {
    auto found = workers_.find(id);
    if (found == workers_.end() || !found->second.live) continue;
    Worker& w = found->second;
    w.live = false;
    w.used = 0;
    w.unacked.clear();
    w.lost_wall = clock_->WallMicros();
    if (absl::Status st = PersistWorker(id, w); !st.ok()) {
      log::Warn(absl::StrCat("scheduler: record lost worker ", id, ": ", st.message()));
    }
    log::Warn(absl::StrCat("scheduler: worker ", id, " (", w.info.name(), ") missed its lease"));
    std::vector<std::string> lost;
    for (const auto& [task, p] : placed_) {
      for (const Rank& r : p.ranks) {
        if (r.worker == id && !r.done) lost.push_back(task);
      }
    }
    for (const std::string& t : lost) {
      if (placed_.count(t)) {
        FailTask(t, v1::FAILURE_INFRASTRUCTURE,
                 absl::StrCat("worker ", w.info.name(), " lost (no heartbeat within ",
                              options_.lease_micros / 1000000.0, "s)"));
      }
    }
  }
}

void Scheduler::FinishCancelled(const std::string& job_id) {
  for (auto it = placed_.begin(); it != placed_.end();) {
    if (it->second.job_id == job_id) {
      Release(it->second);
      EndAttempt(it->first, it->second);
      it = placed_.erase(it);
    } else {
      ++it;
    }
  }
  absl::StatusOr<v1::Job> done = jobs_->Update(job_id, [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
    return jobs::FinishCancel(j, clock_->WallMicros());
  });
  if (!done.ok()) log::Error(absl::StrCat("scheduler: cancel ", job_id, ": ", done.status().message()));
  Forget(job_id);
}

void Scheduler::FailTask(const std::string& task_id, v1::FailureKind kind, const std::string& error) {
  auto it = placed_.find(task_id);
  if (it == placed_.end()) return;
  Placed p = it->second;
  Release(it->second);
  EndAttempt(task_id, p);
  placed_.erase(it);
  if (p.cancelling) {
    FinishCancelled(p.job_id);
    return;
  }
  const int64_t now = clock_->NowMicros();
  jobs::TaskFailure f;
  f.stage = p.stage;
  f.task = p.task;
  f.kind = kind;
  f.error = error;
  f.max_infra_failures = kMaxInfraFailures;
  f.backoff_micros = [this](int retry) { return Backoff(options_, retry); };
  jobs::TaskFailureOutcome out;
  absl::StatusOr<v1::Job> job = jobs_->Update(p.job_id, [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
    return jobs::FailTask(j, f, clock_->WallMicros(), &out);
  });
  if (!job.ok()) {
    log::Error(absl::StrCat("scheduler: fail task ", task_id, ": ", job.status().message()));
    return;
  }
  if (out.gave_up) {
    for (auto it2 = placed_.begin(); it2 != placed_.end();) {  // the job's other tasks stop (heartbeats say so)
      if (it2->second.job_id == p.job_id) {
        Release(it2->second);
        EndAttempt(it2->first, it2->second);
        it2 = placed_.erase(it2);
      } else {
        ++it2;
      }
    }
    Forget(p.job_id);
  } else {
    not_before_[task_id] = now + Backoff(options_, out.retry);
  }
  Wake();
}

void Scheduler::PlaceJobs(int64_t now) {
  std::vector<v1::Job> candidates;
  for (auto it = active_.begin(); it != active_.end();) {
    absl::StatusOr<v1::Job> j = jobs_->Get(kScheduler, *it);
    if (!j.ok() || IsTerminal(j->state())) {
      const std::string id = *it++;
      Forget(id);
      continue;
    }
    if (j->state() == v1::JOB_CANCELLING) {
      bool any = false;
      for (auto& [task, p] : placed_) {
        if (p.job_id == j->id()) p.cancelling = true, any = true;
      }
      const std::string id = *it;
      ++it;
      if (!any) FinishCancelled(id);
      continue;
    }
    candidates.push_back(*std::move(j));
    ++it;
  }
  std::sort(candidates.begin(), candidates.end(), [](const v1::Job& a, const v1::Job& b) {
    if (a.spec().priority() != b.spec().priority()) return a.spec().priority() > b.spec().priority();
    return a.id() < b.id();  // ids are time-ordered: older first
  });
  std::map<std::string, int> free;
  for (const auto& [id, w] : workers_) {
    if (w.live && !w.draining) free[id] = std::max(0, w.info.slots() - w.used);
  }
  int reserved = 0;
  for (const v1::Job& job : candidates) PlaceJob(job, now, free, reserved);
  assigned_.SignalAll();
}

void Scheduler::PlaceJob(const v1::Job& job, int64_t now, std::map<std::string, int>& free, int& reserved) {
  const int s = CurrentStage(job);
  if (s < 0) {  // nothing left to run (e.g. recovered after the last stage finished)
    (void)jobs_->Update(job.id(), [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
      j.set_state(v1::JOB_SUCCEEDED);
      return std::vector<v1::Event>{JobEvent(v1::JOB_SUCCEEDED, "every stage succeeded")};
    });
    return;
  }
  const int n = TaskCount(job, s);
  std::string reason;
  bool placed_any = false;
  for (int i = 0; i < n; ++i) {  // every runnable task of the current stage (probes run in parallel)
    const std::string task_id = TaskId(job, s, i);
    if (placed_.count(task_id)) continue;
    if (i < job.stages(s).tasks_size() && job.stages(s).tasks(i).state() != v1::TASK_PENDING) continue;
    const bool placed = PlaceTask(job, s, i, now, free, reserved, &reason);
    placed_any = placed_any || placed;
    if (!placed && !reason.empty() && reason.rfind("retrying", 0) != 0) break;  // the job's other probes wait too
  }
  if (!reason.empty() && !placed_any && job.waiting_reason() != reason) {
    StoreBatch not_synced;  // a reason is recomputed after a restart: no fsync for it
    not_synced.durable = false;
    (void)jobs_->Update(
        job.id(),
        [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
          j.set_waiting_reason(reason);
          return std::vector<v1::Event>{};
        },
        std::move(not_synced));
  }
}

bool Scheduler::PlaceTask(const v1::Job& job, int s, int i, int64_t now, std::map<std::string, int>& free,
                          int& reserved, std::string* reason) {
  const std::string task_id = TaskId(job, s, i);
  const int n = TaskCount(job, s);
  const int R = spec::IsMultiRank(job.spec().stages(s)) ? std::max(1, job.spec().resources().ranks()) : 1;
  const int S = std::max(1, job.spec().resources().slots_per_rank());
  const auto t0 = std::chrono::steady_clock::now();
  auto nb = not_before_.find(task_id);
  if (nb != not_before_.end() && nb->second > now) {
    *reason = absl::StrFormat("retrying %s in %.1fs", job.stages(s).name(), (nb->second - now) / 1e6);
    return false;
  }
  std::vector<std::pair<int, std::string>> order;
  for (const auto& [id, f] : free) order.emplace_back(-f, id);
  std::sort(order.begin(), order.end());
  std::vector<std::string> chosen;  // worker per rank
  for (const auto& [neg, id] : order) {
    for (int k = free[id] / S; k > 0 && static_cast<int>(chosen.size()) < R; --k) chosen.push_back(id);
  }
  if (static_cast<int>(chosen.size()) < R) {
    int avail = 0, capacity = 0;  // free slots; ranks of S slots the live workers could ever hold
    for (const auto& [id, f] : free) avail += f;
    for (const auto& [id, w] : workers_) {
      if (w.live && !w.draining) capacity += w.info.slots() / S;
    }
    decisions_.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (workers_.empty()) {
      *reason = "waiting for a worker to register";
      return false;
    }
    if (capacity < R) {  // can never fit the registered workers: hold it, reserve nothing
      *reason = absl::StrFormat("unschedulable: needs %d ranks of %d slots, the registered workers hold at most %d", R,
                                S, capacity);
      return false;
    }
    *reason = absl::StrFormat("waiting for %d slots (%d ranks x %d), %d free%s", R * S, R, S, avail,
                              reserved > 0 ? absl::StrFormat(", %d reserved for earlier jobs", reserved) : "");
    // Reserve the free slots this task could use, so later tasks cannot starve it; slots it cannot
    // use (fewer than S on a worker) stay free for others (backfill).
    int need = R * S;
    for (const auto& [neg, id] : order) {
      const int take = std::min(need, free[id] / S * S);
      free[id] -= take;
      need -= take;
      reserved += take;
    }
    return false;
  }
  jobs::Placement placement;
  placement.stage = s;
  placement.task = i;
  placement.tasks_in_stage = n;
  placement.ranks = R;
  placement.workers = chosen;
  absl::StatusOr<v1::Job> updated = jobs_->Update(job.id(), [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
    return jobs::PlaceTask(j, placement, clock_->WallMicros());
  });
  if (!updated.ok()) {
    if (!absl::IsFailedPrecondition(updated.status())) {
      log::Error(absl::StrCat("scheduler: place ", task_id, ": ", updated.status().message()));
    }
    *reason = "";
    return false;
  }
  const v1::Task& t = updated->stages(s).tasks(i);
  Placed p;
  p.job_id = job.id();
  p.stage = s;
  p.task = i;
  p.attempt = t.attempt();
  p.slots_per_rank = S;
  for (int r = 0; r < R; ++r) {
    p.ranks.push_back({chosen[r], false});
    Worker& w = workers_[chosen[r]];
    w.used += S;
    free[chosen[r]] -= S;
    w.unacked[absl::StrCat(task_id, "#", r)] = {MakeAssignment(*updated, s, t, r), 0};
  }
  placed_[task_id] = std::move(p);
  not_before_.erase(task_id);
  decisions_.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return true;
}

Scheduler::Stats Scheduler::TakeStats() {
  MutexLock lock(&mu_);
  Stats s;
  for (const auto& [id, w] : workers_) {
    (w.live ? s.workers_live : s.workers_lost)++;
    if (!w.live) continue;
    s.slots_total += w.info.slots();
    s.slots_used += w.used;
  }
  s.decision_seconds.swap(decisions_);
  s.stage_seconds.swap(stage_seconds_);
  s.job_metrics = job_metrics_;
  return s;
}

}  // namespace topiary::server
