// The job state machine as plain functions: each transition checked on a
// hand-built job record, without a store, a clock or a scheduler.
#include "server/jobs/transitions.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace topiary::server::jobs {
namespace {

// A job of `kinds` stages: "prune" (one task), "search" (a prune with `probes` candidates), "distill".
v1::Job MakeJob(const std::vector<std::string>& kinds, int probes = 3) {
  v1::Job j;
  j.set_id("job-1");
  j.set_state(v1::JOB_QUEUED);
  j.mutable_spec()->set_max_retries(1);
  for (const std::string& k : kinds) {
    v1::StageSpec* s = j.mutable_spec()->add_stages();
    if (k == "search") {
      s->mutable_prune()->mutable_search()->set_candidates(probes);
    } else if (k == "prune") {
      s->mutable_prune();
    } else {
      s->mutable_distill();
    }
    v1::Stage* st = j.add_stages();
    st->set_name(k);
    st->set_state(v1::STAGE_PENDING);
  }
  return j;
}

Placement On(int stage, int task, int tasks_in_stage, std::vector<std::string> workers) {
  Placement p;
  p.stage = stage;
  p.task = task;
  p.tasks_in_stage = tasks_in_stage;
  p.ranks = static_cast<int>(workers.size());
  p.workers = std::move(workers);
  return p;
}

RankDone Done(int stage, int task, int rank, bool last, std::string result = "") {
  RankDone r;
  r.stage = stage, r.task = task, r.rank = rank, r.last = last;
  r.result_json = std::move(result);
  r.jobs_root = "/data/jobs";
  return r;
}

TEST(Transitions, CurrentStageSkipsFinishedStagesAndIsMinusOneAtTheEnd) {
  v1::Job j = MakeJob({"prune", "distill"});
  EXPECT_EQ(CurrentStage(j), 0);
  j.mutable_stages(0)->set_state(v1::STAGE_SKIPPED);
  EXPECT_EQ(CurrentStage(j), 1);
  j.mutable_stages(1)->set_state(v1::STAGE_SUCCEEDED);
  EXPECT_EQ(CurrentStage(j), -1);
}

TEST(Transitions, TaskIdsNameProbesOnlyInASearch) {
  v1::Job j = MakeJob({"prune", "search"});
  EXPECT_EQ(TaskId(j, 0, 0), "job-1/prune");
  EXPECT_EQ(TaskId(j, 1, 2), "job-1/search/probe-2");
}

TEST(Transitions, PlacingStartsTheJobTheStageAndAnAttempt) {
  v1::Job j = MakeJob({"distill"});
  auto ev = PlaceTask(j, On(0, 0, 1, {"w-a", "w-b"}), 1000);
  ASSERT_TRUE(ev.ok()) << ev.status();
  EXPECT_EQ(j.state(), v1::JOB_RUNNING);
  EXPECT_EQ(j.stages(0).state(), v1::STAGE_RUNNING);
  EXPECT_EQ(j.stages(0).start_time_micros(), 1000);
  ASSERT_EQ(j.stages(0).tasks_size(), 1);
  const v1::Task& t = j.stages(0).tasks(0);
  EXPECT_EQ(t.id(), "job-1/distill");
  EXPECT_EQ(t.attempt(), 1);
  EXPECT_EQ(t.state(), v1::TASK_ASSIGNED);
  EXPECT_EQ(t.ranks(), 2);
  ASSERT_EQ(t.workers_size(), 2);
  EXPECT_EQ(t.workers(1), "w-b");
  ASSERT_EQ(ev->size(), 3u);  // job running, stage running, task assigned
  EXPECT_EQ((*ev)[0].job_state(), v1::JOB_RUNNING);
  EXPECT_NE((*ev)[2].message().find("attempt 1 on w-a,w-b"), std::string::npos);

  // A second attempt clears what the first left behind.
  j.mutable_stages(0)->mutable_tasks(0)->add_done_ranks(1);
  j.mutable_stages(0)->mutable_tasks(0)->set_result_json("{}");
  ASSERT_TRUE(PlaceTask(j, On(0, 0, 1, {"w-c", "w-d"}), 2000).ok());
  EXPECT_EQ(j.stages(0).tasks(0).attempt(), 2);
  EXPECT_EQ(j.stages(0).tasks(0).done_ranks_size(), 0);
  EXPECT_TRUE(j.stages(0).tasks(0).result_json().empty());
  EXPECT_EQ(j.stages(0).start_time_micros(), 1000);  // the stage started with its first task
}

TEST(Transitions, PlacingACancelledJobIsRefusedAndChangesNothing) {
  for (v1::JobState s : {v1::JOB_CANCELLING, v1::JOB_CANCELLED, v1::JOB_FAILED, v1::JOB_SUCCEEDED}) {
    v1::Job j = MakeJob({"prune"});
    j.set_state(s);
    const std::string before = j.SerializeAsString();
    auto ev = PlaceTask(j, On(0, 0, 1, {"w-a"}), 1);
    EXPECT_TRUE(absl::IsFailedPrecondition(ev.status())) << v1::JobState_Name(s);
    EXPECT_EQ(j.SerializeAsString(), before);
  }
}

TEST(Transitions, ProgressMarksRunningOnceAndKeepsAShortPhase) {
  v1::Job j = MakeJob({"distill"});
  ASSERT_TRUE(PlaceTask(j, On(0, 0, 1, {"w-a"}), 1).ok());
  v1::Progress p;
  p.set_step(5);
  p.set_phase(std::string(200, 'x'));
  auto ev = ReportProgress(j, 0, 0, true, &p);
  EXPECT_EQ(j.stages(0).tasks(0).state(), v1::TASK_RUNNING);
  EXPECT_EQ(ev.size(), 2u);
  EXPECT_EQ(j.stages(0).tasks(0).progress().step(), 5);
  EXPECT_EQ(j.stages(0).tasks(0).progress().phase().size(), 64u);
  EXPECT_EQ(ReportProgress(j, 0, 0, false, nullptr).size(), 0u);
  EXPECT_EQ(ReportProgress(j, 0, 7, true, &p).size(), 0u);  // no such task: nothing
}

TEST(Transitions, RanksCompleteTheTaskThenTheStageThenTheJob) {
  v1::Job j = MakeJob({"prune", "distill"});
  ASSERT_TRUE(PlaceTask(j, On(0, 0, 1, {"w-a"}), 1).ok());
  RankDoneOutcome out;
  auto ev = CompleteRank(j, Done(0, 0, 0, true, R"({"params": 5})"), 11000001, &out);
  EXPECT_EQ(j.stages(0).state(), v1::STAGE_SUCCEEDED);
  EXPECT_EQ(j.stages(0).result_json(), R"({"params": 5})");
  EXPECT_NEAR(out.stage_seconds, 11.0, 1e-6);
  EXPECT_FALSE(out.job_finished);
  EXPECT_EQ(j.state(), v1::JOB_RUNNING);

  ASSERT_TRUE(PlaceTask(j, On(1, 0, 1, {"w-a", "w-b"}), 2).ok());
  out = {};
  CompleteRank(j, Done(1, 0, 1, false), 3, &out);
  EXPECT_EQ(j.stages(1).tasks(0).state(), v1::TASK_ASSIGNED);  // rank 0 still runs
  EXPECT_EQ(j.stages(1).tasks(0).done_ranks_size(), 1);
  EXPECT_LT(out.stage_seconds, 0);
  CompleteRank(j, Done(1, 0, 0, true, R"({"output_path": "/elsewhere/model"})"), 4, &out);
  EXPECT_TRUE(out.job_finished);
  EXPECT_EQ(j.state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(j.output_path(), "/elsewhere/model");
}

TEST(Transitions, AJobWithoutAnOutputPathPointsAtItsLastStage) {
  v1::Job j = MakeJob({"prune"});
  ASSERT_TRUE(PlaceTask(j, On(0, 0, 1, {"w-a"}), 1).ok());
  RankDoneOutcome out;
  CompleteRank(j, Done(0, 0, 0, true, "{}"), 2, &out);
  EXPECT_EQ(j.output_path(), "/data/jobs/job-1/prune");
}

TEST(Transitions, ACompletionAfterACancelIsRecordedButMovesNothing) {
  v1::Job j = MakeJob({"prune", "distill"});
  ASSERT_TRUE(PlaceTask(j, On(0, 0, 1, {"w-a"}), 1).ok());
  j.set_state(v1::JOB_CANCELLING);
  RankDoneOutcome out;
  auto ev = CompleteRank(j, Done(0, 0, 0, true, "{}"), 2, &out);
  EXPECT_TRUE(out.cancelled);
  EXPECT_TRUE(ev.empty());
  EXPECT_EQ(j.stages(0).tasks(0).done_ranks_size(), 1);
  EXPECT_EQ(j.stages(0).state(), v1::STAGE_RUNNING);
  EXPECT_EQ(j.state(), v1::JOB_CANCELLING);
}

TEST(Transitions, ASearchFansInToItsLowestLossProbe) {
  v1::Job j = MakeJob({"search"}, 3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(PlaceTask(j, On(0, i, 3, {"w-a"}), 1).ok());
  ASSERT_EQ(j.stages(0).tasks_size(), 3);
  RankDoneOutcome out;
  CompleteRank(j, Done(0, 0, 0, true, R"({"loss": 3.5})"), 2, &out);
  CompleteRank(j, Done(0, 2, 0, true, R"({"loss": 2.25, "shape": "b"})"), 3, &out);
  EXPECT_EQ(j.stages(0).state(), v1::STAGE_RUNNING);  // probe-1 still runs
  CompleteRank(j, Done(0, 1, 0, true, R"({"no_loss": 1})"), 4, &out);
  EXPECT_EQ(j.stages(0).state(), v1::STAGE_SUCCEEDED);
  const nlohmann::json r = nlohmann::json::parse(j.stages(0).result_json());
  EXPECT_EQ(r["best_task"], 2);
  EXPECT_EQ(r["best"]["shape"], "b");
  EXPECT_TRUE(r["losses"][1].is_null());
  EXPECT_EQ(j.state(), v1::JOB_SUCCEEDED);
}

TEST(Transitions, FanInOfProbesWithoutLossesSaysSo) {
  v1::Stage s;
  s.add_tasks()->set_result_json("not json");
  s.add_tasks()->set_result_json(R"({"loss": "high"})");
  FanInResult f = FanIn(s);
  EXPECT_EQ(f.message, "no probe reported a loss");
  EXPECT_FALSE(nlohmann::json::parse(f.json).contains("best_task"));
}

TEST(Transitions, TaskFailuresRetryUntilMaxRetriesThenFailTheJob) {
  v1::Job j = MakeJob({"prune", "distill"});  // max_retries 1
  ASSERT_TRUE(PlaceTask(j, On(0, 0, 1, {"w-a"}), 1).ok());
  TaskFailure f;
  f.error = "out of memory";
  f.backoff_micros = [](int retry) { return retry * int64_t{1000000}; };
  TaskFailureOutcome out;
  auto ev = FailTask(j, f, 2, &out);
  EXPECT_FALSE(out.gave_up);
  EXPECT_EQ(out.retry, 1);
  EXPECT_EQ(j.stages(0).tasks(0).state(), v1::TASK_PENDING);
  EXPECT_EQ(j.stages(0).tasks(0).task_failures(), 1);
  EXPECT_EQ(j.stages(0).tasks(0).workers_size(), 0);
  EXPECT_NE(ev.back().message().find("retry 1 in 1.0s"), std::string::npos);

  ASSERT_TRUE(PlaceTask(j, On(0, 0, 1, {"w-b"}), 3).ok());
  out = {};
  FailTask(j, f, 4, &out);
  EXPECT_TRUE(out.gave_up);
  EXPECT_EQ(j.state(), v1::JOB_FAILED);
  EXPECT_EQ(j.stages(0).state(), v1::STAGE_FAILED);
  EXPECT_EQ(j.stages(1).state(), v1::STAGE_CANCELLED);
  EXPECT_EQ(j.error(), "stage prune failed after 2 attempt(s): out of memory");
}

TEST(Transitions, InfrastructureFailuresDoNotSpendRetries) {
  v1::Job j = MakeJob({"prune"});
  TaskFailure f;
  f.kind = v1::FAILURE_INFRASTRUCTURE;
  f.error = "worker lost";
  f.max_infra_failures = 3;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(PlaceTask(j, On(0, 0, 1, {"w-a"}), i).ok());
    TaskFailureOutcome out;
    auto ev = FailTask(j, f, i, &out);
    EXPECT_FALSE(out.gave_up) << i;
    EXPECT_NE(ev.back().message().find("(not counted)"), std::string::npos);
  }
  EXPECT_EQ(j.stages(0).tasks(0).task_failures(), 0);
  ASSERT_TRUE(PlaceTask(j, On(0, 0, 1, {"w-a"}), 9).ok());
  TaskFailureOutcome out;
  FailTask(j, f, 9, &out);
  EXPECT_TRUE(out.gave_up);  // the fourth lost worker is one too many
}

TEST(Transitions, FinishingACancelCancelsEverythingUnfinishedOnce) {
  v1::Job j = MakeJob({"prune", "distill"});
  ASSERT_TRUE(PlaceTask(j, On(0, 0, 1, {"w-a"}), 1).ok());
  j.set_state(v1::JOB_CANCELLING);
  auto ev = FinishCancel(j, 50);
  EXPECT_EQ(j.state(), v1::JOB_CANCELLED);
  EXPECT_EQ(j.stages(0).state(), v1::STAGE_CANCELLED);
  EXPECT_EQ(j.stages(0).end_time_micros(), 50);
  EXPECT_EQ(j.stages(0).tasks(0).state(), v1::TASK_CANCELLED);
  EXPECT_EQ(j.stages(1).state(), v1::STAGE_CANCELLED);
  EXPECT_EQ(ev.size(), 3u);
  EXPECT_TRUE(FinishCancel(j, 60).empty());  // already terminal
}

}  // namespace
}  // namespace topiary::server::jobs
