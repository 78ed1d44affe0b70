#include "server/jobs/transitions.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/spec/stages.h"
#include "server/jobs/job_manager.h"
#include "server/jobs/events.h"

namespace topiary::server::jobs {

int CurrentStage(const v1::Job& job) {
  for (int i = 0; i < job.stages_size(); ++i) {
    const v1::StageState s = job.stages(i).state();
    if (s != v1::STAGE_SUCCEEDED && s != v1::STAGE_SKIPPED) return i;
  }
  return -1;
}

std::string TaskId(const v1::Job& job, int stage, int index) {
  const std::string base = absl::StrCat(job.id(), "/", job.stages(stage).name());
  return spec::TaskCount(job.spec().stages(stage)) == 1 ? base : absl::StrCat(base, "/probe-", index);
}

absl::StatusOr<std::vector<v1::Event>> PlaceTask(v1::Job& j, const Placement& p, int64_t wall) {
  std::vector<v1::Event> ev;
  if (j.state() != v1::JOB_QUEUED && j.state() != v1::JOB_RUNNING) {
    return absl::FailedPreconditionError(absl::StrCat("job is ", v1::JobState_Name(j.state())));
  }
  if (j.state() == v1::JOB_QUEUED) {
    j.set_state(v1::JOB_RUNNING);
    ev.push_back(JobEvent(v1::JOB_RUNNING, ""));
  }
  j.clear_waiting_reason();
  v1::Stage& st = *j.mutable_stages(p.stage);
  if (st.state() != v1::STAGE_RUNNING) {
    st.set_state(v1::STAGE_RUNNING);
    st.set_start_time_micros(wall);
    ev.push_back(StageEvent(st, p.tasks_in_stage > 1 ? absl::StrCat(p.tasks_in_stage, " probe tasks") : ""));
  }
  for (int k = st.tasks_size(); k < p.tasks_in_stage; ++k) {
    v1::Task* t = st.add_tasks();
    t->set_id(TaskId(j, p.stage, k));
    t->set_index(k);
    t->set_ranks(p.ranks);
    t->set_state(v1::TASK_PENDING);
  }
  v1::Task& t = *st.mutable_tasks(p.task);
  t.set_attempt(t.attempt() + 1);
  t.set_state(v1::TASK_ASSIGNED);
  t.clear_workers();
  t.clear_done_ranks();
  t.clear_result_json();
  for (const std::string& w : p.workers) t.add_workers(w);
  ev.push_back(TaskEvent(st, t, absl::StrCat("attempt ", t.attempt(), " on ", absl::StrJoin(p.workers, ","))));
  return ev;
}

std::vector<v1::Event> ReportProgress(v1::Job& j, int stage, int task, bool first, const v1::Progress* progress) {
  std::vector<v1::Event> ev;
  v1::Stage& s = *j.mutable_stages(stage);
  if (task >= s.tasks_size()) return ev;
  v1::Task& t = *s.mutable_tasks(task);
  if (first) {
    t.set_state(v1::TASK_RUNNING);
    ev.push_back(TaskEvent(s, t, "running"));
  }
  if (progress != nullptr) {
    *t.mutable_progress() = *progress;
    if (t.progress().phase().size() > 64) t.mutable_progress()->mutable_phase()->resize(64);
    ev.push_back(ProgressEvent(s, t));
  }
  return ev;
}

FanInResult FanIn(const v1::Stage& s) {
  nlohmann::json losses = nlohmann::json::array(), best_result;
  int best = -1;
  double best_loss = 0;
  for (int i = 0; i < s.tasks_size(); ++i) {
    nlohmann::json r = nlohmann::json::parse(s.tasks(i).result_json(), nullptr, false);
    const bool has = r.is_object() && r.contains("loss") && r["loss"].is_number();
    losses.push_back(has ? r["loss"] : nlohmann::json());
    if (has && (best < 0 || r["loss"].get<double>() < best_loss)) {
      best = i, best_loss = r["loss"].get<double>(), best_result = r;
    }
  }
  nlohmann::json out = {{"losses", losses}};
  FanInResult f;
  if (best >= 0) {
    out["best_task"] = best, out["best_loss"] = best_loss, out["best"] = best_result;
    f.message = absl::StrFormat("best: probe-%d (loss %.4f)", best, best_loss);
  } else {
    f.message = "no probe reported a loss";
  }
  f.json = out.dump();
  return f;
}

std::vector<v1::Event> CompleteRank(v1::Job& j, const RankDone& r, int64_t wall, RankDoneOutcome* out) {
  std::vector<v1::Event> ev;
  v1::Stage& s = *j.mutable_stages(r.stage);
  if (r.task >= s.tasks_size()) return ev;
  v1::Task& t = *s.mutable_tasks(r.task);
  t.add_done_ranks(r.rank);
  if (r.rank == 0) t.set_result_json(r.result_json);
  // Cancelled since the scheduler last looked: the rank's work is recorded, but nothing moves on.
  out->cancelled = j.state() == v1::JOB_CANCELLING || IsTerminal(j.state());
  if (!r.last || out->cancelled) return ev;
  t.set_state(v1::TASK_SUCCEEDED);
  t.clear_error();
  ev.push_back(TaskEvent(s, t, "succeeded"));
  for (const v1::Task& other : s.tasks()) {
    if (other.state() != v1::TASK_SUCCEEDED) return ev;  // other probes still to finish
  }
  std::string message;
  if (s.tasks_size() > 1) {
    FanInResult f = FanIn(s);
    s.set_result_json(f.json);
    message = f.message;
  } else {
    s.set_result_json(t.result_json());
  }
  s.set_state(v1::STAGE_SUCCEEDED);
  s.set_end_time_micros(wall);
  out->stage_seconds = (s.end_time_micros() - s.start_time_micros()) / 1e6;
  ev.push_back(StageEvent(s, message));
  if (CurrentStage(j) >= 0) return ev;
  out->job_finished = true;
  j.set_state(v1::JOB_SUCCEEDED);
  std::string output = absl::StrCat(r.jobs_root, "/", j.id(), "/", s.name());
  nlohmann::json result = nlohmann::json::parse(s.result_json(), nullptr, false);
  if (result.is_object() && result.contains("output_path") && result["output_path"].is_string()) {
    output = result["output_path"];
  }
  j.set_output_path(output);
  ev.push_back(JobEvent(v1::JOB_SUCCEEDED, "every stage succeeded"));
  return ev;
}

std::vector<v1::Event> FailTask(v1::Job& j, const TaskFailure& f, int64_t wall, TaskFailureOutcome* out) {
  std::vector<v1::Event> ev;
  v1::Stage& s = *j.mutable_stages(f.stage);
  if (f.task >= s.tasks_size()) return ev;
  v1::Task& t = *s.mutable_tasks(f.task);
  t.set_state(v1::TASK_FAILED);
  t.set_error(f.error);
  t.set_failure_kind(f.kind);
  t.clear_done_ranks();
  if (f.kind == v1::FAILURE_TASK) t.set_task_failures(t.task_failures() + 1);
  if (f.kind == v1::FAILURE_INFRASTRUCTURE) t.set_infra_failures(t.infra_failures() + 1);
  ev.push_back(
      TaskEvent(s, t, absl::StrCat(f.kind == v1::FAILURE_TASK ? "failed: " : "infrastructure failure: ", f.error)));
  const bool too_many = f.kind == v1::FAILURE_TASK ? t.task_failures() > j.spec().max_retries()
                                                   : t.infra_failures() > f.max_infra_failures;
  if (too_many) {
    out->gave_up = true;
    s.set_state(v1::STAGE_FAILED);
    s.set_end_time_micros(wall);
    ev.push_back(StageEvent(s, f.error));
    for (v1::Stage& later : *j.mutable_stages()) {
      if (later.state() == v1::STAGE_PENDING) later.set_state(v1::STAGE_CANCELLED);
    }
    j.set_state(v1::JOB_FAILED);
    j.set_error(absl::StrCat("stage ", s.name(), " failed after ", t.attempt(), " attempt(s): ", f.error));
    ev.push_back(JobEvent(v1::JOB_FAILED, j.error()));
    return ev;
  }
  out->retry = t.attempt();
  t.set_state(v1::TASK_PENDING);
  t.clear_workers();
  const int64_t backoff = f.backoff_micros ? f.backoff_micros(out->retry) : 0;
  ev.push_back(TaskEvent(s, t,
                         absl::StrFormat("retry %d in %.1fs%s", out->retry, backoff / 1e6,
                                         f.kind == v1::FAILURE_INFRASTRUCTURE ? " (not counted)" : "")));
  return ev;
}

std::vector<v1::Event> FinishCancel(v1::Job& j, int64_t wall) {
  std::vector<v1::Event> ev;
  if (IsTerminal(j.state())) return ev;
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
}

}  // namespace topiary::server::jobs
