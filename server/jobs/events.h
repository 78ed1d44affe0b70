// Builders of the events the scheduler records with its transitions
// (JobManager::Update fills in the job, the sequence number and the time).
#pragma once

#include <string>

#include "topiary/v1/job.pb.h"

namespace topiary::server {

inline v1::Event JobEvent(v1::JobState s, const std::string& message) {
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_JOB_STATE);
  e.set_job_state(s);
  e.set_message(message);
  return e;
}

inline v1::Event StageEvent(const v1::Stage& s, const std::string& message = "") {
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_STAGE_STATE);
  e.set_stage(s.name());
  e.set_stage_state(s.state());
  e.set_message(message);
  return e;
}

inline v1::Event TaskEvent(const v1::Stage& s, const v1::Task& t, const std::string& message) {
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_TASK_STATE);
  e.set_stage(s.name());
  e.set_task_id(t.id());
  e.set_task_state(t.state());
  e.set_message(message);
  return e;
}

inline v1::Event ProgressEvent(const v1::Stage& s, const v1::Task& t) {
  v1::Event e;
  e.set_kind(v1::EVENT_KIND_PROGRESS);
  e.set_stage(s.name());
  e.set_task_id(t.id());
  *e.mutable_progress() = t.progress();
  return e;
}

}  // namespace topiary::server
