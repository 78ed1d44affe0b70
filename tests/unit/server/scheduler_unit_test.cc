// The Scheduler in process over the in-memory store and a fake clock:
// placement, completion, a lease running out, what it forgets when a job
// ends, and each rule of the worker protocol (identity, fencing, delivery
// at least once, durable completions, rendezvous scope).
#include "server/scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "common/file_util.h"
#include "testing/gated_store.h"

namespace topiary::server {
namespace {

class SchedulerUnitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = *MakeTempDir("topiary-sched-unit");
    auto gated = std::make_unique<testing::GatedStore>(MakeMemoryStore());
    gate_ = gated.get();
    store_ = std::move(gated);
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
  std::string Submit(int max_retries = 0, int ranks = 0, int slots_per_rank = 1) {
    v1::JobSpec s;
    s.mutable_resources()->set_slots_per_rank(slots_per_rank);
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
  // Time passing with the scheduler's passes every 100 ms, as its thread runs them.
  void Pass(int64_t micros) {
    for (int64_t t = 0; t < micros; t += 100'000) {
      clock_.AdvanceMicros(std::min<int64_t>(100'000, micros - t));
      sched_->RunOnce();
    }
  }
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
  testing::GatedStore* gate_ = nullptr;  // store_: holds up one job's writes when asked
  std::unique_ptr<JobManager> jobs_;
  RendezvousStore rendezvous_;
  std::unique_ptr<Scheduler> sched_;
  Principal admin_{"root", Principal::Role::kAdmin};
};

TEST_F(SchedulerUnitTest, PlacesCompletesAndForgetsTheJobsRendezvousKeys) {
  const std::string id = Submit();
  sched_->RunOnce();
  EXPECT_EQ(Get(id).waiting_reason(), "waiting for a worker to register");
  EXPECT_EQ(jobs_->CountQueuedByReason(), (std::map<std::string, int64_t>{{"no_worker", 1}}));
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

// A job's training series (topiary_train_*) end with the task that reported
// them: the next stage of the same job shows none until it trains, so a
// finished training stage never reads as a stalled one.
TEST_F(SchedulerUnitTest, TrainingSeriesEndWithTheirTask) {
  v1::JobSpec s;
  s.set_name("two");
  s.mutable_teacher()->set_path(root_ + "/t");
  s.mutable_data()->mutable_calibration()->set_path(root_ + "/c.bin");
  s.add_stages()->mutable_importance();
  s.add_stages()->mutable_evaluate()->add_tasks(root_ + "/tasks.jsonl");
  auto j = jobs_->Create(admin_, s, "");
  ASSERT_TRUE(j.ok()) << j.status();
  sched_->Notify(j->id());
  const WorkerCall w = Register("a");
  sched_->RunOnce();
  auto first = sched_->Poll(w, 0);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 1u);
  v1::ReportProgressRequest p;
  p.set_task_id((*first)[0].task_id());
  p.set_rank(0);
  p.set_attempt((*first)[0].attempt());
  (*p.mutable_metrics())["tokens"] = 4096;
  (*p.mutable_metrics())["loss"] = 2.5;
  ASSERT_TRUE(sched_->Progress(w, p).ok());
  EXPECT_EQ(sched_->TakeStats().job_metrics[j->id()].at("tokens"), 4096);
  ASSERT_TRUE(sched_->Complete(w, Done((*first)[0])).ok());
  EXPECT_EQ(Get(j->id()).state(), v1::JOB_RUNNING);  // the evaluate stage is next
  EXPECT_EQ(sched_->TakeStats().job_metrics.count(j->id()), 0u);
}

TEST_F(SchedulerUnitTest, ALeaseThatRunsOutFailsTheTaskWithoutCountingIt) {
  const std::string id = Submit(/*max_retries=*/0);
  const WorkerCall w = Register("a");
  sched_->RunOnce();
  ASSERT_EQ(sched_->Poll(w, 0)->size(), 1u);
  Pass(1'500'000);  // no heartbeat within the 1 s lease
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
  EXPECT_EQ(sched_->CheckRendezvous(w, first.task_id(), first.attempt()).code(), absl::StatusCode::kFailedPrecondition);
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

// A cancellation racing a completion or a placement never ends SUCCEEDED,
// whatever the order.
TEST_F(SchedulerUnitTest, CancelRacingCompletionOrPlacementNeverSucceeds) {
  const WorkerCall w = Register("a");
  for (int i = 0; i < 50; ++i) {
    const std::string id = Submit();
    if (i % 3 == 2) {  // cancel between the pass that read the job and its placement
      ASSERT_TRUE(jobs_->Cancel(admin_, id).ok());
      sched_->RunOnce();
      EXPECT_EQ(sched_->Poll(w, 0)->size(), 0u) << "a cancelled job got a task placed";
    } else {
      sched_->RunOnce();
      auto assigned = sched_->Poll(w, 0);
      ASSERT_EQ(assigned->size(), 1u);
      const v1::Assignment a = (*assigned)[0];
      if (i % 3 == 0) {  // cancel, then the rank's completion arrives before the next pass
        ASSERT_TRUE(jobs_->Cancel(admin_, id).ok());
        ASSERT_TRUE(sched_->Complete(w, Done(a)).ok());
      } else {  // the completion, then a cancel that finds the job finished
        ASSERT_TRUE(sched_->Complete(w, Done(a)).ok());
        (void)jobs_->Cancel(admin_, id);
      }
    }
    sched_->RunOnce();
    const v1::Job job = Get(id);
    if (i % 3 == 1) {
      EXPECT_EQ(job.state(), v1::JOB_SUCCEEDED) << i;
    } else {
      EXPECT_EQ(job.state(), v1::JOB_CANCELLED) << i << " " << job.DebugString();
    }
    EXPECT_EQ(sched_->TakeStats().slots_used, 0) << i;
  }
}

// The same race with the scheduler's own thread placing while cancels and
// completions arrive from others: a job whose cancel was accepted never
// ends SUCCEEDED, and no slot is left in use.
TEST_F(SchedulerUnitTest, CancelRacingTheSchedulerThreadNeverSucceeds) {
  const WorkerCall w = Register("a", 4);
  sched_->Start();
  std::atomic<bool> done{false};
  std::thread worker([&] {
    while (!done.load()) {
      auto assigned = sched_->Poll(w, 2000);
      if (!assigned.ok()) continue;
      for (const v1::Assignment& a : *assigned) (void)sched_->Complete(w, Done(a));
    }
  });
  std::vector<std::pair<std::string, bool>> jobs;  // id, whether its cancel was accepted
  for (int i = 0; i < 200; ++i) {
    const std::string id = Submit();
    if (i % 4 == 3) std::this_thread::sleep_for(std::chrono::microseconds(200 * (i % 7)));
    auto c = jobs_->Cancel(admin_, id);
    jobs.emplace_back(id, c.ok());
  }
  for (int k = 0; k < 200; ++k) {
    bool all = true;
    for (const auto& [id, cancelled] : jobs) all = all && IsTerminal(Get(id).state());
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  done.store(true);
  worker.join();
  sched_->Stop();
  int succeeded = 0, cancelled_n = 0;
  for (const auto& [id, cancelled] : jobs) {
    const v1::Job job = Get(id);
    if (cancelled) {
      EXPECT_NE(job.state(), v1::JOB_SUCCEEDED) << id;
    }
    succeeded += job.state() == v1::JOB_SUCCEEDED;
    cancelled_n += job.state() == v1::JOB_CANCELLED;
  }
  EXPECT_EQ(succeeded + cancelled_n, 200);
  EXPECT_EQ(sched_->TakeStats().slots_used, 0);
}

// A task that can never fit the registered workers reserves nothing and says
// so; a smaller job runs beside it; slots a waiting task cannot use (fewer
// than its slots per rank on a worker) go to others.
TEST_F(SchedulerUnitTest, UnfittableTasksWaitWithoutBlockingOthers) {
  const WorkerCall a = Register("a", 2);
  const WorkerCall b = Register("b", 1);
  const std::string huge = Submit(0, /*ranks=*/3, /*slots_per_rank=*/2);  // 3 ranks of 2: never fits
  const std::string wide = Submit(0, 0, /*slots_per_rank=*/2);            // fits a only
  sched_->RunOnce();
  EXPECT_NE(Get(huge).waiting_reason().find("unschedulable: needs 3 ranks of 2 slots"), std::string::npos)
      << Get(huge).waiting_reason();
  ASSERT_EQ(sched_->Poll(a, 0)->size(), 1u);        // wide runs on a
  const std::string second_wide = Submit(0, 0, 2);  // waits for a; cannot use b's single slot
  const std::string narrow = Submit(0, 0, 1);       // backfills b's slot
  sched_->RunOnce();
  EXPECT_EQ(Get(second_wide).state(), v1::JOB_QUEUED);
  EXPECT_NE(Get(second_wide).waiting_reason().find("waiting for 2 slots"), std::string::npos);
  // The metrics' classes of the scheduler's own wording.
  EXPECT_EQ(jobs_->CountQueuedByReason(), (std::map<std::string, int64_t>{{"slots", 1}, {"unschedulable", 1}}));
  auto on_b = sched_->Poll(b, 0);
  ASSERT_EQ(on_b->size(), 1u);
  EXPECT_EQ((*on_b)[0].job_id(), narrow);
  EXPECT_EQ(Get(huge).state(), v1::JOB_QUEUED);
}

// A gang that fits the cluster but not the free slots reserves what it can
// use, so a stream of small jobs cannot starve it.
TEST_F(SchedulerUnitTest, AReservationHoldsSlotsForAWaitingGang) {
  const WorkerCall a = Register("a", 2);
  const WorkerCall b = Register("b", 2);
  const std::string three = Submit(0, /*ranks=*/3);
  sched_->RunOnce();
  EXPECT_EQ(Get(three).state(), v1::JOB_RUNNING);
  const std::string four = Submit(0, /*ranks=*/4);  // fits 4 slots, 1 free
  const std::string one = Submit();
  sched_->RunOnce();
  EXPECT_NE(Get(four).waiting_reason().find("waiting for 4 slots"), std::string::npos) << Get(four).waiting_reason();
  EXPECT_NE(Get(one).waiting_reason().find("reserved for earlier jobs"), std::string::npos)
      << Get(one).waiting_reason();
  EXPECT_EQ(Get(one).state(), v1::JOB_QUEUED);
}

// A lost worker stays lost across a restart and is forgotten after a while.
TEST_F(SchedulerUnitTest, LostWorkersStayLostAndAreForgotten) {
  options_.forget_lost_micros = 10'000'000;
  sched_ = std::make_unique<Scheduler>(jobs_.get(), store_.get(), &clock_, options_, &rendezvous_);
  const WorkerCall w = Register("a");
  Pass(1'500'000);
  EXPECT_EQ(sched_->TakeStats().workers_lost, 1);
  sched_.reset();  // restart: it does not come back as live
  sched_ = std::make_unique<Scheduler>(jobs_.get(), store_.get(), &clock_, options_, &rendezvous_);
  ASSERT_TRUE(sched_->Recover().ok());
  auto stats = sched_->TakeStats();
  EXPECT_EQ(stats.workers_live, 0);
  EXPECT_EQ(stats.workers_lost, 1);
  Pass(10'000'000);
  stats = sched_->TakeStats();
  EXPECT_EQ(stats.workers_lost + stats.workers_live, 0);
  EXPECT_TRUE(store_->Workers()->empty());
  EXPECT_EQ(sched_->Heartbeat(w, {}).status().code(), absl::StatusCode::kNotFound);
}

// A coordinator that stalls (a slow disk sync held its lock, the process was
// paused) does not count the stall against the leases it could not renew.
TEST_F(SchedulerUnitTest, AStallOfTheCoordinatorLosesNoWorker) {
  const WorkerCall w = Register("a");
  sched_->RunOnce();
  clock_.AdvanceMicros(5'000'000);  // five leases without a pass
  sched_->RunOnce();
  EXPECT_EQ(sched_->TakeStats().workers_live, 1);
  EXPECT_TRUE(sched_->Heartbeat(w, {}).ok());
  Pass(1'500'000);  // but a worker that is really silent is still lost
  EXPECT_EQ(sched_->TakeStats().workers_lost, 1);
}

// A store write stuck under the scheduler's lock (a slow fsync of a first
// progress report) holds up no other worker's heartbeat: each is answered,
// its lease renewed, and no worker is lost when the write completes.
TEST_F(SchedulerUnitTest, ASlowSyncHoldsUpNoHeartbeatAndLosesNoLease) {
  const std::string id = Submit();
  const WorkerCall a = Register("a");
  const WorkerCall b = Register("b");
  sched_->RunOnce();
  auto on_a = sched_->Poll(a, 0);
  auto on_b = sched_->Poll(b, 0);
  ASSERT_TRUE(on_a.ok() && on_b.ok());
  ASSERT_EQ(on_a->size() + on_b->size(), 1u);
  const bool runs_on_a = on_a->size() == 1;
  const WorkerCall runner = runs_on_a ? a : b;
  const WorkerCall other = runs_on_a ? b : a;
  const v1::Assignment task = runs_on_a ? (*on_a)[0] : (*on_b)[0];
  gate_->Hold(id);
  std::thread slow([&] {
    v1::ReportProgressRequest p;
    p.set_task_id(task.task_id());
    p.set_rank(task.rank());
    p.set_attempt(task.attempt());
    EXPECT_TRUE(sched_->Progress(runner, p).ok());  // the transition to RUNNING is synced
  });
  const bool blocked = gate_->WaitUntilBlocked(std::chrono::seconds(5));
  int answered = 0;
  std::vector<std::future<absl::StatusOr<v1::HeartbeatResponse>>> beats;  // outlive the gate
  for (int i = 0; i < 4; ++i) {                                           // two leases pass while the write is stuck
    clock_.AdvanceMicros(500'000);
    beats.push_back(std::async(std::launch::async, [&] { return sched_->Heartbeat(other, {}); }));
    if (beats.back().wait_for(std::chrono::seconds(5)) != std::future_status::ready) break;
    answered += beats.back().get().ok() ? 1 : 0;
  }
  gate_->Release();
  slow.join();
  beats.clear();
  EXPECT_TRUE(blocked);
  EXPECT_EQ(answered, 4) << "a heartbeat waited for the store write";
  EXPECT_TRUE(sched_->Heartbeat(runner, Running({task})).ok());
  sched_->RunOnce();
  EXPECT_EQ(sched_->TakeStats().workers_live, 2);
  EXPECT_EQ(Get(id).stages(0).tasks(0).state(), v1::TASK_RUNNING);
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
