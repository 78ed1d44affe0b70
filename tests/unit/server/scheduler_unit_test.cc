// The Scheduler in process over the in-memory store and a fake clock:
// placement, completion, a lease running out, what it forgets when a job
// ends, and each rule of the worker protocol (identity, fencing, delivery
// at least once, durable completions, rendezvous scope).
#include "server/scheduler/scheduler.h"

#include <gtest/gtest.h>

#include "common/file_util.h"

namespace topiary::server {
namespace {

class SchedulerUnitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = *MakeTempDir("topiary-sched-unit");
    store_ = MakeMemoryStore();
    JobManagerOptions o;
    o.storage_roots = {root_};
    jobs_ = std::make_unique<JobManager>(store_.get(), &clock_, o);
    options_.lease_micros = 1'000'000;
    options_.redeliver_micros = 500'000;
    options_.backoff_micros = 100'000;
    options_.storage_root = root_;
    sched_ = std::make_unique<Scheduler>(jobs_.get(), store_.get(), &clock_, options_, &rendezvous_);
  }
  void TearDown() override { RemoveAll(root_).IgnoreError(); }
  // A job of one stage: evaluate (one rank) or importance (`ranks` ranks).
  std::string Submit(int max_retries = 0, int ranks = 0) {
    v1::JobSpec s;
    s.set_name("u");
    s.mutable_teacher()->set_path(root_ + "/t");
    if (ranks > 0) {
      s.add_stages()->mutable_importance();
      s.mutable_data()->mutable_calibration()->set_path(root_ + "/c.bin");
      s.mutable_resources()->set_ranks(ranks);
    } else {
      s.add_stages()->mutable_evaluate()->add_tasks(root_ + "/tasks.jsonl");
    }
    s.set_max_retries(max_retries);
    auto j = jobs_->Create(admin_, s, "");
    EXPECT_TRUE(j.ok()) << j.status();
    sched_->Notify(j->id());
    return j->id();
  }
  WorkerCall Register(const std::string& name, int slots = 1, const std::string& principal = "workers") {
    v1::RegisterWorkerRequest r;
    r.set_name(name);
    r.set_slots(slots);
    auto resp = sched_->Register(principal, r);
    EXPECT_TRUE(resp.ok()) << resp.status();
    EXPECT_GE(resp->secret().size(), 32u);
    return WorkerCall{principal, resp->worker_id(), resp->secret()};
  }
  v1::Job Get(const std::string& id) { return *jobs_->Get(admin_, id); }
  static v1::CompleteTaskRequest Done(const v1::Assignment& a, const std::string& result = "{}") {
    v1::CompleteTaskRequest d;
    d.set_task_id(a.task_id());
    d.set_rank(a.rank());
    d.set_attempt(a.attempt());
    d.set_ok(true);
    d.set_result_json(result);
    return d;
  }
  static v1::HeartbeatRequest Running(const std::vector<v1::Assignment>& as) {
    v1::HeartbeatRequest h;
    for (const v1::Assignment& a : as) {
      v1::RankRef* r = h.add_running();
      r->set_task_id(a.task_id());
      r->set_rank(a.rank());
      r->set_attempt(a.attempt());
    }
    return h;
  }

  std::string root_;
  FakeClock clock_;
  SchedulerOptions options_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<JobManager> jobs_;
  RendezvousStore rendezvous_;
  std::unique_ptr<Scheduler> sched_;
  Principal admin_{"root", Principal::Role::kAdmin};
};

TEST_F(SchedulerUnitTest, PlacesCompletesAndForgetsTheJobsRendezvousKeys) {
  const std::string id = Submit();
  sched_->RunOnce();
  EXPECT_EQ(Get(id).waiting_reason(), "waiting for a worker to register");
  const WorkerCall w = Register("a");
  sched_->RunOnce();
  auto assigned = sched_->Poll(w, 0);
  ASSERT_TRUE(assigned.ok());
  ASSERT_EQ(assigned->size(), 1u);
  const v1::Assignment a = (*assigned)[0];
  EXPECT_EQ(a.task_id(), id + "/evaluate");
  EXPECT_EQ(a.stage_index(), 0);
  ASSERT_EQ(a.stage_names_size(), 1);
  EXPECT_EQ(a.stage_names(0), "evaluate");
  EXPECT_EQ(Get(id).state(), v1::JOB_RUNNING);
  ASSERT_TRUE(sched_->CheckRendezvous(w, a.task_id(), a.attempt()).ok());
  ASSERT_TRUE(rendezvous_.Set(a.task_id(), a.attempt(), "addr", "x").ok());
  ASSERT_TRUE(rendezvous_.Set("other-job/t", 1, "addr", "y").ok());
  ASSERT_TRUE(sched_->Complete(w, Done(a, "{\"loss\": 1.5}")).ok());
  v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(job.stages(0).result_json(), "{\"loss\": 1.5}");
  EXPECT_FALSE(rendezvous_.Get(a.task_id(), a.attempt(), "addr", 0)->has_value());  // the finished task's keys are gone
  EXPECT_TRUE(rendezvous_.Get("other-job/t", 1, "addr", 0)->has_value());
  EXPECT_EQ(sched_->TakeStats().slots_used, 0);
  // A repeat of the same completion (its answer was lost) is accepted; nothing changes.
  EXPECT_TRUE(sched_->Complete(w, Done(a, "{\"loss\": 1.5}")).ok());
}

TEST_F(SchedulerUnitTest, ALeaseThatRunsOutFailsTheTaskWithoutCountingIt) {
  const std::string id = Submit(/*max_retries=*/0);
  const WorkerCall w = Register("a");
  sched_->RunOnce();
  ASSERT_EQ(sched_->Poll(w, 0)->size(), 1u);
  clock_.AdvanceMicros(1'500'000);  // no heartbeat within the 1 s lease
  sched_->RunOnce();
  v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_RUNNING);  // retried, not failed: max_retries 0 does not apply
  EXPECT_EQ(job.stages(0).tasks(0).state(), v1::TASK_PENDING);
  EXPECT_EQ(job.stages(0).tasks(0).failure_kind(), v1::FAILURE_INFRASTRUCTURE);
  EXPECT_EQ(job.stages(0).tasks(0).task_failures(), 0);
  EXPECT_EQ(job.stages(0).tasks(0).infra_failures(), 1);
  EXPECT_EQ(sched_->Heartbeat(w, {}).status().code(), absl::StatusCode::kNotFound);
  auto stats = sched_->TakeStats();
  EXPECT_EQ(stats.workers_lost, 1);
  EXPECT_EQ(stats.workers_live, 0);
}

// Identity: a worker's calls need its secret and the principal that registered it.
TEST_F(SchedulerUnitTest, AWorkerCannotActForAnotherOne) {
  Submit();
  const WorkerCall victim = Register("victim");
  const WorkerCall thief = Register("thief");
  sched_->RunOnce();
  auto assigned = sched_->Poll(victim, 0);
  ASSERT_TRUE(assigned.ok());
  ASSERT_EQ(assigned->size(), 1u);
  const v1::Assignment a = (*assigned)[0];
  WorkerCall wrong_secret = victim;
  wrong_secret.secret = thief.secret;
  WorkerCall wrong_principal = victim;
  wrong_principal.principal = "someone-else";
  for (const WorkerCall& bad : {wrong_secret, wrong_principal}) {
    EXPECT_EQ(sched_->Heartbeat(bad, {}).status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(sched_->Poll(bad, 0).status().code(), absl::StatusCode::kPermissionDenied);
    v1::ReportProgressRequest p;
    p.set_task_id(a.task_id());
    p.set_attempt(a.attempt());
    EXPECT_EQ(sched_->Progress(bad, p).status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(sched_->Complete(bad, Done(a)).code(), absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(sched_->CheckRendezvous(bad, a.task_id(), a.attempt()).code(), absl::StatusCode::kPermissionDenied);
  }
  // The thief with its own identity is refused the victim's rank too.
  EXPECT_EQ(sched_->Complete(thief, Done(a)).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Get(a.job_id()).stages(0).tasks(0).state(), v1::TASK_ASSIGNED);
  EXPECT_TRUE(sched_->Complete(victim, Done(a)).ok());
}

// Fencing: a rank of an earlier attempt can neither report nor complete the retry.
TEST_F(SchedulerUnitTest, AStaleAttemptIsFenced) {
  const std::string id = Submit(/*max_retries=*/1);
  const WorkerCall w = Register("a");
  sched_->RunOnce();
  const v1::Assignment first = (*sched_->Poll(w, 0))[0];
  v1::CompleteTaskRequest fail = Done(first);
  fail.set_ok(false);
  fail.set_error("boom");
  ASSERT_TRUE(sched_->Complete(w, fail).ok());
  clock_.AdvanceMicros(options_.backoff_micros + 1);
  sched_->RunOnce();
  auto again = sched_->Poll(w, 0);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), 1u);
  const v1::Assignment second = (*again)[0];
  EXPECT_EQ(second.attempt(), first.attempt() + 1);
  v1::ReportProgressRequest p;
  p.set_task_id(first.task_id());
  p.set_attempt(first.attempt());
  EXPECT_EQ(sched_->Progress(w, p).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sched_->Complete(w, Done(first)).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sched_->CheckRendezvous(w, first.task_id(), first.attempt()).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Get(id).stages(0).tasks(0).state(), v1::TASK_ASSIGNED);  // the stale completion changed nothing
  // A heartbeat naming the stale rank gets it back to stop.
  auto hb = sched_->Heartbeat(w, Running({first, second}));
  ASSERT_TRUE(hb.ok());
  ASSERT_EQ(hb->stop_size(), 1);
  EXPECT_EQ(hb->stop(0).attempt(), first.attempt());
  EXPECT_TRUE(sched_->Complete(w, Done(second)).ok());
  EXPECT_EQ(Get(id).state(), v1::JOB_SUCCEEDED);
}

// Delivery at least once: an assignment whose reply was lost comes again
// until a heartbeat lists the rank as running.
TEST_F(SchedulerUnitTest, ALostAssignmentIsSentAgainUntilAcknowledged) {
  Submit();
  const WorkerCall w = Register("a");
  sched_->RunOnce();
  ASSERT_EQ(sched_->Poll(w, 0)->size(), 1u);  // this reply is "lost"
  EXPECT_EQ(sched_->Poll(w, 0)->size(), 0u);  // not again at once
  clock_.AdvanceMicros(options_.redeliver_micros);
  auto again = sched_->Poll(w, 0);
  ASSERT_EQ(again->size(), 1u);
  ASSERT_TRUE(sched_->Heartbeat(w, Running(*again)).ok());
  clock_.AdvanceMicros(options_.redeliver_micros * 3);
  EXPECT_EQ(sched_->Poll(w, 0)->size(), 0u);  // acknowledged: never again
}

// Durable acknowledgement: a rank's completion survives a restart of the
// coordinator, so a two-rank task whose first rank finished before it
// completes when the second does.
TEST_F(SchedulerUnitTest, RankCompletionsSurviveARestart) {
  const std::string id = Submit(/*max_retries=*/0, /*ranks=*/2);
  const WorkerCall w = Register("a", 2);
  sched_->RunOnce();
  auto assigned = sched_->Poll(w, 0);
  ASSERT_EQ(assigned->size(), 2u);
  const v1::Assignment r0 = (*assigned)[0].rank() == 0 ? (*assigned)[0] : (*assigned)[1];
  const v1::Assignment r1 = (*assigned)[0].rank() == 0 ? (*assigned)[1] : (*assigned)[0];
  ASSERT_TRUE(sched_->Complete(w, Done(r0, "{\"scores\": 1}")).ok());
  EXPECT_EQ(Get(id).stages(0).tasks(0).done_ranks_size(), 1);
  // Restart: a new scheduler over the same store.
  sched_.reset();
  sched_ = std::make_unique<Scheduler>(jobs_.get(), store_.get(), &clock_, options_, &rendezvous_);
  ASSERT_TRUE(sched_->Recover().ok());
  ASSERT_TRUE(sched_->Complete(w, Done(r1)).ok());
  v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(job.stages(0).result_json(), "{\"scores\": 1}");  // rank 0's result, stored before the restart
}

// Rendezvous scope: only workers with a rank of the attempt may use its keys.
TEST_F(SchedulerUnitTest, RendezvousKeysAreScopedToTheTasksWorkers) {
  Submit();
  const WorkerCall mine = Register("mine");
  const WorkerCall other = Register("other");
  sched_->RunOnce();
  auto assigned = sched_->Poll(mine, 0);
  ASSERT_EQ(assigned->size(), 1u);
  const v1::Assignment a = (*assigned)[0];
  EXPECT_TRUE(sched_->CheckRendezvous(mine, a.task_id(), a.attempt()).ok());
  EXPECT_EQ(sched_->CheckRendezvous(other, a.task_id(), a.attempt()).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(sched_->CheckRendezvous(mine, "job-x/evaluate", 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(rendezvous_.Set(a.task_id(), a.attempt(), "big", std::string(kMaxRendezvousValue + 1, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
}

// A worker that says it is draining gets nothing new.
TEST_F(SchedulerUnitTest, NothingIsPlacedOnADrainingWorker) {
  const std::string id = Submit();
  const WorkerCall w = Register("a");
  v1::HeartbeatRequest draining;
  draining.set_draining(true);
  ASSERT_TRUE(sched_->Heartbeat(w, draining).ok());
  sched_->RunOnce();
  EXPECT_EQ(sched_->Poll(w, 0)->size(), 0u);
  EXPECT_EQ(Get(id).state(), v1::JOB_QUEUED);
  const WorkerCall fresh = Register("b");
  sched_->RunOnce();
  EXPECT_EQ(sched_->Poll(fresh, 0)->size(), 1u);
}

// A worker's result is bounded before it is parsed or stored.
TEST_F(SchedulerUnitTest, ADeeplyNestedResultIsRefused) {
  const std::string id = Submit();
  const WorkerCall w = Register("a");
  sched_->RunOnce();
  const v1::Assignment a = (*sched_->Poll(w, 0))[0];
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(sched_->Complete(w, Done(a, deep)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sched_->Complete(w, Done(a, "{not json")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Get(id).stages(0).tasks(0).state(), v1::TASK_ASSIGNED);
}

}  // namespace
}  // namespace topiary::server
