#include "server/scheduler/scheduler.h"

#include <algorithm>
#include <chrono>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace topiary::server {
namespace {

const Principal kScheduler{"scheduler", Principal::Role::kAdmin};

bool MultiRank(const v1::StageSpec& s) {
  return s.kind_case() == v1::StageSpec::kImportance || s.kind_case() == v1::StageSpec::kTeacherCorrection ||
         s.kind_case() == v1::StageSpec::kDistill;
}

// The first stage still to run; -1 when every stage is done.
int CurrentStage(const v1::Job& job) {
  for (int i = 0; i < job.stages_size(); ++i) {
    const v1::StageState s = job.stages(i).state();
    if (s != v1::STAGE_SUCCEEDED && s != v1::STAGE_SKIPPED) return i;
  }
  return -1;
}

// A search stage fans out into one probe task per candidate; others are one task.
int TaskCount(const v1::Job& job, int stage) {
  const v1::StageSpec& s = job.spec().stages(stage);
  if (s.kind_case() == v1::StageSpec::kPrune && s.prune().has_search()) {
    return s.prune().search().candidates() > 0 ? static_cast<int>(s.prune().search().candidates()) : 8;
  }
  return 1;
}

std::string TaskId(const v1::Job& job, int stage, int index) {
  const std::string base = absl::StrCat(job.id(), "/", job.stages(stage).name());
  return TaskCount(job, stage) == 1 ? base : absl::StrCat(base, "/probe-", index);
}

// Fan-in of a search stage: the probe with the lowest reported "loss".
std::string FanIn(const v1::Stage& s) {
  nlohmann::json losses = nlohmann::json::array();
  int best = -1;
  double best_loss = 0;
  for (int i = 0; i < s.tasks_size(); ++i) {
    nlohmann::json r = nlohmann::json::parse(s.tasks(i).result_json(), nullptr, false);
    const bool has = r.is_object() && r.contains("loss") && r["loss"].is_number();
    losses.push_back(has ? r["loss"] : nlohmann::json());
    if (has && (best < 0 || r["loss"].get<double>() < best_loss)) best = i, best_loss = r["loss"].get<double>();
  }
  nlohmann::json out = {{"losses", losses}};
  if (best >= 0) out["best_task"] = best, out["best_loss"] = best_loss, out["best"] = nlohmann::json::parse(
                                                                             s.tasks(best).result_json(), nullptr, false);
  return out.dump();
}

v1::Event JobEvent(v1::JobState s, const std::string& message) {
  v1::Event e;
  e.set_kind("job_state");
  e.set_job_state(s);
  e.set_message(message);
  return e;
}
v1::Event StageEvent(const v1::Stage& s, const std::string& message = "") {
  v1::Event e;
  e.set_kind("stage_state");
  e.set_stage(s.name());
  e.set_stage_state(s.state());
  e.set_message(message);
  return e;
}
v1::Event TaskEvent(const v1::Stage& s, const v1::Task& t, const std::string& message) {
  v1::Event e;
  e.set_kind("task_state");
  e.set_stage(s.name());
  e.set_task_id(t.id());
  e.set_task_state(t.state());
  e.set_message(message);
  return e;
}

int64_t Backoff(const SchedulerOptions& o, int retry) {
  int64_t b = o.backoff_micros;
  for (int i = 1; i < retry && b < o.max_backoff_micros; ++i) b *= 2;
  return std::min(b, o.max_backoff_micros);
}

}  // namespace

Scheduler::Scheduler(JobManager* jobs, Store* store, const Clock* clock, SchedulerOptions options,
                     RendezvousStore* rendezvous)
    : jobs_(jobs), store_(store), clock_(clock), options_(std::move(options)), rendezvous_(rendezvous) {}

void Scheduler::Forget(const std::string& job_id) {
  active_.erase(job_id);
  job_metrics_.erase(job_id);
  const std::string prefix = job_id + "/";
  for (auto it = not_before_.lower_bound(prefix); it != not_before_.end() && it->first.rfind(prefix, 0) == 0;) {
    it = not_before_.erase(it);
  }
  if (rendezvous_ != nullptr) rendezvous_->DropJob(job_id);
}

Scheduler::~Scheduler() { Stop(); }

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
  for (int k = 0; k < stage; ++k) {
    if (!j.stages(k).result_json().empty()) (*a.mutable_stage_results())[j.stages(k).name()] = j.stages(k).result_json();
  }
  return a;
}

absl::Status Scheduler::Recover() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowMicros();
  ASSIGN_OR_RETURN(auto workers, store_->Workers());
  for (const auto& [id, blob] : workers) {
    Worker w;
    if (!w.info.ParseFromString(blob)) return absl::InternalError(absl::StrCat("store: worker ", id, " is corrupt"));
    w.lease_until = now + (options_.recovery_grace_micros > 0 ? options_.recovery_grace_micros
                                                              : 3 * options_.lease_micros);
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
      p.slots_per_rank = std::max(1, j.spec().resources().slots_per_rank());
      p.running = t.state() == v1::TASK_RUNNING;
      bool known = true;
      for (int r = 0; r < t.workers_size(); ++r) {
        p.ranks.push_back({t.workers(r), false});
        auto w = workers_.find(t.workers(r));
        if (w == workers_.end()) {
          known = false;
          continue;
        }
        w->second.used += p.slots_per_rank;
        if (t.state() == v1::TASK_ASSIGNED) w->second.outbox.push_back(MakeAssignment(j, s, t, r));  // may be lost
      }
      placed_[t.id()] = p;
      if (!known) FailTask(t.id(), v1::FAILURE_INFRASTRUCTURE, "a worker of this task is unknown after a restart");
    }
  }
  log::Info(absl::StrCat("scheduler: ", workers_.size(), " workers, ", active_.size(), " active jobs, ",
                         placed_.size(), " placed tasks recovered"));
  return absl::OkStatus();
}

void Scheduler::Start() {
  thread_ = std::thread([this] {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(wake_mu_);
        wake_.wait_for(lock, std::chrono::milliseconds(100), [this] { return dirty_ || stop_; });
        if (stop_) return;
        dirty_ = false;
      }
      RunOnce();
    }
  });
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  assigned_.notify_all();
}

void Scheduler::Wake() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    dirty_ = true;
  }
  wake_.notify_all();
}

void Scheduler::Notify(const std::string& job_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    active_.insert(job_id);
  }
  Wake();
}

void Scheduler::RunOnce() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowMicros();
  ExpireLeases(now);
  PlaceJobs(now);
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
  for (auto& [id, w] : workers_) {
    if (!w.live || w.lease_until >= now) continue;
    w.live = false;
    w.used = 0;
    w.outbox.clear();
    log::Warn(absl::StrCat("scheduler: worker ", id, " (", w.info.name(), ") missed its lease"));
    std::vector<std::string> lost;
    for (const auto& [task, p] : placed_) {
      for (const Rank& r : p.ranks) {
        if (r.worker == id && !r.done) lost.push_back(task);
      }
    }
    for (const std::string& t : lost) {
      if (placed_.count(t)) {
        FailTask(t, v1::FAILURE_INFRASTRUCTURE, absl::StrCat("worker ", w.info.name(), " lost (no heartbeat within ",
                                                             options_.lease_micros / 1000000.0, "s)"));
      }
    }
  }
}

void Scheduler::FinishCancelled(const std::string& job_id) {
  for (auto it = placed_.begin(); it != placed_.end();) {
    if (it->second.job_id == job_id) {
      Release(it->second);
      it = placed_.erase(it);
    } else {
      ++it;
    }
  }
  absl::StatusOr<v1::Job> done = jobs_->Update(job_id, [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
    std::vector<v1::Event> ev;
    if (IsTerminal(j.state())) return ev;
    const int64_t wall = clock_->WallMicros();
    for (v1::Stage& s : *j.mutable_stages()) {
      for (v1::Task& t : *s.mutable_tasks()) {
        if (t.state() != v1::TASK_SUCCEEDED && t.state() != v1::TASK_FAILED) t.set_state(v1::TASK_CANCELLED);
      }
      if (s.state() == v1::STAGE_PENDING || s.state() == v1::STAGE_RUNNING) {
        if (s.state() == v1::STAGE_RUNNING) s.set_end_time_micros(wall);
        s.set_state(v1::STAGE_CANCELLED);
        ev.push_back(StageEvent(s));
      }
    }
    j.set_state(v1::JOB_CANCELLED);
    j.clear_waiting_reason();
    ev.push_back(JobEvent(v1::JOB_CANCELLED, "every rank stopped"));
    return ev;
  });
  if (!done.ok()) log::Error(absl::StrCat("scheduler: cancel ", job_id, ": ", done.status().message()));
  Forget(job_id);
}

void Scheduler::FailTask(const std::string& task_id, v1::FailureKind kind, const std::string& error) {
  auto it = placed_.find(task_id);
  if (it == placed_.end()) return;
  Placed p = it->second;
  Release(it->second);
  placed_.erase(it);
  if (p.cancelling) {
    FinishCancelled(p.job_id);
    return;
  }
  const int64_t now = clock_->NowMicros();
  bool gave_up = false;
  int retry = 0;
  absl::StatusOr<v1::Job> job = jobs_->Update(p.job_id, [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
    std::vector<v1::Event> ev;
    v1::Stage& s = *j.mutable_stages(p.stage);
    if (p.task >= s.tasks_size()) return ev;
    v1::Task& t = *s.mutable_tasks(p.task);
    t.set_state(v1::TASK_FAILED);
    t.set_error(error);
    t.set_failure_kind(kind);
    if (kind == v1::FAILURE_TASK) t.set_task_failures(t.task_failures() + 1);
    ev.push_back(TaskEvent(s, t, absl::StrCat(kind == v1::FAILURE_TASK ? "failed: " : "infrastructure failure: ",
                                              error)));
    if (kind == v1::FAILURE_TASK && t.task_failures() > j.spec().max_retries()) {
      gave_up = true;
      s.set_state(v1::STAGE_FAILED);
      s.set_end_time_micros(clock_->WallMicros());
      ev.push_back(StageEvent(s));
      for (v1::Stage& later : *j.mutable_stages()) {
        if (later.state() == v1::STAGE_PENDING) later.set_state(v1::STAGE_CANCELLED);
      }
      j.set_state(v1::JOB_FAILED);
      j.set_error(absl::StrCat("stage ", s.name(), " failed after ", t.attempt(), " attempt(s): ", error));
      ev.push_back(JobEvent(v1::JOB_FAILED, j.error()));
      return ev;
    }
    retry = t.attempt();
    t.set_state(v1::TASK_PENDING);
    t.clear_workers();
    ev.push_back(TaskEvent(s, t, absl::StrFormat("retry %d in %.1fs%s", retry, Backoff(options_, retry) / 1e6,
                                                 kind == v1::FAILURE_INFRASTRUCTURE ? " (not counted)" : "")));
    return ev;
  });
  if (!job.ok()) {
    log::Error(absl::StrCat("scheduler: fail task ", task_id, ": ", job.status().message()));
    return;
  }
  if (gave_up) {
    for (auto it2 = placed_.begin(); it2 != placed_.end();) {  // the job's other tasks stop (progress says so)
      if (it2->second.job_id == p.job_id) {
        Release(it2->second);
        it2 = placed_.erase(it2);
      } else {
        ++it2;
      }
    }
    Forget(p.job_id);
  } else {
    not_before_[task_id] = now + Backoff(options_, retry);
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
    if (w.live) free[id] = std::max(0, w.info.slots() - w.used);
  }
  int reserved = 0;
  for (const v1::Job& job : candidates) {
    const int s = CurrentStage(job);
    if (s < 0) {  // nothing left to run (e.g. recovered after the last stage finished)
      (void)jobs_->Update(job.id(), [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
        j.set_state(v1::JOB_SUCCEEDED);
        return std::vector<v1::Event>{JobEvent(v1::JOB_SUCCEEDED, "every stage succeeded")};
      });
      continue;
    }
    const int n = TaskCount(job, s);
    const int R = MultiRank(job.spec().stages(s)) ? std::max(1, job.spec().resources().ranks()) : 1;
    const int S = std::max(1, job.spec().resources().slots_per_rank());
    std::string reason;
    bool placed_any = false;
    for (int i = 0; i < n; ++i) {  // every runnable task of the current stage (probes run in parallel)
      const std::string task_id = TaskId(job, s, i);
      if (placed_.count(task_id)) continue;
      if (i < job.stages(s).tasks_size() && job.stages(s).tasks(i).state() != v1::TASK_PENDING) continue;
      const auto t0 = std::chrono::steady_clock::now();
      auto nb = not_before_.find(task_id);
      if (nb != not_before_.end() && nb->second > now) {
        reason = absl::StrFormat("retrying %s in %.1fs", job.stages(s).name(), (nb->second - now) / 1e6);
        continue;
      }
      std::vector<std::pair<int, std::string>> order;
      for (const auto& [id, f] : free) order.emplace_back(-f, id);
      std::sort(order.begin(), order.end());
      std::vector<std::string> chosen;  // worker per rank
      for (const auto& [neg, id] : order) {
        for (int k = free[id] / S; k > 0 && static_cast<int>(chosen.size()) < R; --k) chosen.push_back(id);
      }
      if (static_cast<int>(chosen.size()) < R) {
        int avail = 0;
        for (const auto& [id, f] : free) avail += f;
        reason = workers_.empty()
                     ? "waiting for a worker to register"
                     : absl::StrFormat("waiting for %d slots (%d ranks x %d), %d free%s", R * S, R, S, avail,
                                       reserved > 0 ? absl::StrFormat(", %d reserved for earlier jobs", reserved) : "");
        // Reserve what this task would take, so later tasks cannot starve it.
        int need = R * S;
        for (const auto& [neg, id] : order) {
          const int take = std::min(need, free[id]);
          free[id] -= take;
          need -= take;
          reserved += take;
        }
        decisions_.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        break;
      }
      absl::StatusOr<v1::Job> updated =
          jobs_->Update(job.id(), [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
            std::vector<v1::Event> ev;
            if (j.state() == v1::JOB_QUEUED) {
              j.set_state(v1::JOB_RUNNING);
              ev.push_back(JobEvent(v1::JOB_RUNNING, ""));
            }
            j.clear_waiting_reason();
            v1::Stage& st = *j.mutable_stages(s);
            if (st.state() != v1::STAGE_RUNNING) {
              st.set_state(v1::STAGE_RUNNING);
              st.set_start_time_micros(clock_->WallMicros());
              ev.push_back(StageEvent(st, n > 1 ? absl::StrCat(n, " probe tasks") : ""));
            }
            for (int k = st.tasks_size(); k < n; ++k) {
              v1::Task* t = st.add_tasks();
              t->set_id(TaskId(j, s, k));
              t->set_index(k);
              t->set_ranks(R);
              t->set_state(v1::TASK_PENDING);
            }
            v1::Task& t = *st.mutable_tasks(i);
            t.set_attempt(t.attempt() + 1);
            t.set_state(v1::TASK_ASSIGNED);
            t.clear_workers();
            for (const std::string& w : chosen) t.add_workers(w);
            ev.push_back(TaskEvent(st, t, absl::StrCat("attempt ", t.attempt(), " on ", absl::StrJoin(chosen, ","))));
            return ev;
          });
      if (!updated.ok()) {
        log::Error(absl::StrCat("scheduler: place ", task_id, ": ", updated.status().message()));
        break;
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
        w.outbox.push_back(MakeAssignment(*updated, s, t, r));
      }
      placed_[task_id] = std::move(p);
      not_before_.erase(task_id);
      placed_any = true;
      decisions_.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
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
  assigned_.notify_all();
}

absl::StatusOr<v1::RegisterWorkerResponse> Scheduler::Register(const v1::RegisterWorkerRequest& req) {
  if (req.name().empty()) return absl::InvalidArgumentError("name: required");
  if (req.slots() <= 0 || req.slots() > 4096) return absl::InvalidArgumentError("slots: must be in [1, 4096]");
  if (req.memory_bytes() < 0) return absl::InvalidArgumentError("memory_bytes: must not be negative");
  std::string id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = absl::StrFormat("w-%x-%d", clock_->WallMicros(), next_worker_++);
    StoreBatch b;
    b.put_workers.emplace_back(id, req.SerializeAsString());
    RETURN_IF_ERROR(store_->Write(b));
    Worker w;
    w.info = req;
    w.lease_until = clock_->NowMicros() + options_.lease_micros;
    workers_[id] = std::move(w);
  }
  log::Info(absl::StrCat("scheduler: worker ", id, " (", req.name(), ", ", req.slots(), " slots, ",
                         req.device_kind(), ") registered"));
  Wake();
  v1::RegisterWorkerResponse r;
  r.set_worker_id(id);
  r.set_lease_micros(options_.lease_micros);
  return r;
}

absl::StatusOr<v1::HeartbeatResponse> Scheduler::Heartbeat(const std::string& worker_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || !it->second.live) {
    return absl::NotFoundError(absl::StrCat("worker ", worker_id, " is not registered (or its lease ran out); "
                                            "register again"));
  }
  it->second.lease_until = clock_->NowMicros() + options_.lease_micros;
  v1::HeartbeatResponse r;
  r.set_lease_micros(options_.lease_micros);
  for (const auto& [task, p] : placed_) {
    if (!p.cancelling) continue;
    for (const Rank& rank : p.ranks) {
      if (rank.worker == worker_id && !rank.done) {
        r.add_cancel_task_ids(task);
        break;
      }
    }
  }
  return r;
}

absl::StatusOr<std::vector<v1::Assignment>> Scheduler::Poll(const std::string& worker_id, int64_t wait_micros) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::microseconds(std::clamp<int64_t>(wait_micros, 0, 30'000'000));
  for (;;) {
    auto it = workers_.find(worker_id);
    if (it == workers_.end() || !it->second.live) {
      return absl::NotFoundError(absl::StrCat("worker ", worker_id, " is not registered; register again"));
    }
    it->second.lease_until = std::max(it->second.lease_until, clock_->NowMicros() + options_.lease_micros);
    if (!it->second.outbox.empty()) {
      std::vector<v1::Assignment> out(it->second.outbox.begin(), it->second.outbox.end());
      it->second.outbox.clear();
      return out;
    }
    {
      std::lock_guard<std::mutex> w(wake_mu_);
      if (stop_) return std::vector<v1::Assignment>();
    }
    if (assigned_.wait_until(lock, deadline) == std::cv_status::timeout) return std::vector<v1::Assignment>();
  }
}

absl::StatusOr<bool> Scheduler::Progress(const v1::ReportProgressRequest& req) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = placed_.find(req.task_id());
  if (it == placed_.end()) return true;  // a stale attempt: stop
  Placed& p = it->second;
  if (req.rank() < 0 || req.rank() >= static_cast<int>(p.ranks.size()) || p.ranks[req.rank()].worker != req.worker_id()) {
    return true;
  }
  if (p.cancelling) return true;
  auto w = workers_.find(req.worker_id());
  if (w != workers_.end()) w->second.lease_until = clock_->NowMicros() + options_.lease_micros;
  const bool first = !p.running;
  if (req.rank() != 0 && !first) return false;  // rank 0 speaks for the task
  p.running = true;
  if (req.rank() == 0 && !req.metrics().empty()) {
    for (const auto& [k, v] : req.metrics()) job_metrics_[p.job_id][k] = v;
  }
  absl::StatusOr<v1::Job> job = jobs_->Update(p.job_id, [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
    std::vector<v1::Event> ev;
    v1::Stage& s = *j.mutable_stages(p.stage);
    if (p.task >= s.tasks_size()) return ev;
    v1::Task& t = *s.mutable_tasks(p.task);
    if (first) {
      t.set_state(v1::TASK_RUNNING);
      ev.push_back(TaskEvent(s, t, "running"));
    }
    if (req.rank() == 0 && req.has_progress()) {
      *t.mutable_progress() = req.progress();
      v1::Event e;
      e.set_kind("progress");
      e.set_stage(s.name());
      e.set_task_id(t.id());
      *e.mutable_progress() = req.progress();
      ev.push_back(e);
    }
    return ev;
  });
  if (!job.ok()) return job.status();
  return false;
}

absl::Status Scheduler::Complete(const v1::CompleteTaskRequest& req) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = placed_.find(req.task_id());
  if (it == placed_.end()) return absl::OkStatus();  // stale: already failed over or finished
  Placed& p = it->second;
  if (req.rank() < 0 || req.rank() >= static_cast<int>(p.ranks.size()) || p.ranks[req.rank()].worker != req.worker_id()) {
    return absl::FailedPreconditionError(absl::StrCat("task ", req.task_id(), " rank ", req.rank(),
                                                      " is not assigned to worker ", req.worker_id()));
  }
  if (!req.ok() && !p.cancelling) {
    FailTask(req.task_id(), v1::FAILURE_TASK, req.error().empty() ? "failed without a message" : req.error());
    return absl::OkStatus();
  }
  if (req.rank() == 0) p.result_json = req.result_json();
  Rank& rank = p.ranks[req.rank()];
  if (!rank.done) {
    auto w = workers_.find(rank.worker);
    if (w != workers_.end() && w->second.live) w->second.used = std::max(0, w->second.used - p.slots_per_rank);
    rank.done = true;
  }
  for (const Rank& r : p.ranks) {
    if (!r.done) return absl::OkStatus();
  }
  const Placed done = p;
  const std::string result_json = req.rank() == 0 ? req.result_json() : p.result_json;
  placed_.erase(it);
  if (done.cancelling) {
    FinishCancelled(done.job_id);
    Wake();
    return absl::OkStatus();
  }
  bool finished = false;
  absl::StatusOr<v1::Job> job = jobs_->Update(done.job_id, [&](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
    std::vector<v1::Event> ev;
    v1::Stage& s = *j.mutable_stages(done.stage);
    if (done.task < s.tasks_size()) {
      v1::Task& t = *s.mutable_tasks(done.task);
      t.set_state(v1::TASK_SUCCEEDED);
      t.clear_error();
      t.set_result_json(result_json);
      ev.push_back(TaskEvent(s, t, "succeeded"));
    }
    for (const v1::Task& t : s.tasks()) {
      if (t.state() != v1::TASK_SUCCEEDED) return ev;  // other probes still to finish
    }
    std::string message;
    if (s.tasks_size() > 1) {  // fan-in
      s.set_result_json(FanIn(s));
      nlohmann::json r = nlohmann::json::parse(s.result_json());
      message = r.contains("best_task") ? absl::StrFormat("best: probe-%d (loss %.4f)", r["best_task"].get<int>(),
                                                          r["best_loss"].get<double>())
                                        : "no probe reported a loss";
    } else {
      s.set_result_json(result_json);
    }
    s.set_state(v1::STAGE_SUCCEEDED);
    s.set_end_time_micros(clock_->WallMicros());
    stage_seconds_.emplace_back(s.name().substr(0, s.name().find('-')),
                                (s.end_time_micros() - s.start_time_micros()) / 1e6);
    ev.push_back(StageEvent(s, message));
    if (CurrentStage(j) < 0) {
      finished = true;
      j.set_state(v1::JOB_SUCCEEDED);
      j.set_output_path(absl::StrCat(options_.storage_root, "/jobs/", j.id(), "/", s.name()));
      ev.push_back(JobEvent(v1::JOB_SUCCEEDED, "every stage succeeded"));
    }
    return ev;
  });
  if (!job.ok()) return job.status();
  if (finished) {
    Forget(done.job_id);
  }
  Wake();
  return absl::OkStatus();
}

Scheduler::Stats Scheduler::TakeStats() {
  std::lock_guard<std::mutex> lock(mu_);
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
