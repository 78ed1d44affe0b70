// The Scheduler in process over the in-memory store and a fake clock: one
// placement, completion, a lease running out, and what it forgets when a job
// ends (rendezvous keys included).
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
    SchedulerOptions so;
    so.lease_micros = 1'000'000;
    so.storage_root = root_;
    sched_ = std::make_unique<Scheduler>(jobs_.get(), store_.get(), &clock_, so, &rendezvous_);
  }
  void TearDown() override { RemoveAll(root_).IgnoreError(); }
  std::string Submit(int max_retries = 0) {
    v1::JobSpec s;
    s.set_name("u");
    s.mutable_teacher()->set_path(root_ + "/t");
    s.add_stages()->mutable_evaluate();
    s.set_max_retries(max_retries);
    auto j = jobs_->Create(admin_, s, "");
    EXPECT_TRUE(j.ok()) << j.status();
    sched_->Notify(j->id());
    return j->id();
  }
  std::string Register(const std::string& name) {
    v1::RegisterWorkerRequest r;
    r.set_name(name);
    r.set_slots(1);
    return sched_->Register(r)->worker_id();
  }
  v1::Job Get(const std::string& id) { return *jobs_->Get(admin_, id); }

  std::string root_;
  FakeClock clock_;
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
  const std::string w = Register("a");
  sched_->RunOnce();
  auto assigned = sched_->Poll(w, 0);
  ASSERT_TRUE(assigned.ok());
  ASSERT_EQ(assigned->size(), 1u);
  const v1::Assignment a = (*assigned)[0];
  EXPECT_EQ(a.task_id(), id + "/evaluate");
  EXPECT_EQ(Get(id).state(), v1::JOB_RUNNING);
  const std::string key = "rdzv/" + id + "/" + a.task_id() + "/1/addr";
  ASSERT_TRUE(rendezvous_.Set(key, "x").ok());
  ASSERT_TRUE(rendezvous_.Set("rdzv/other-job/t/1/addr", "y").ok());
  v1::CompleteTaskRequest done;
  done.set_worker_id(w);
  done.set_task_id(a.task_id());
  done.set_rank(0);
  done.set_ok(true);
  done.set_result_json("{\"loss\": 1.5}");
  ASSERT_TRUE(sched_->Complete(done).ok());
  v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(job.stages(0).result_json(), "{\"loss\": 1.5}");
  EXPECT_FALSE(rendezvous_.Get(key, 0)->has_value());  // the finished job's keys are gone
  EXPECT_TRUE(rendezvous_.Get("rdzv/other-job/t/1/addr", 0)->has_value());
  EXPECT_EQ(sched_->TakeStats().slots_used, 0);
}

TEST_F(SchedulerUnitTest, ALeaseThatRunsOutFailsTheTaskWithoutCountingIt) {
  const std::string id = Submit(/*max_retries=*/0);
  const std::string w = Register("a");
  sched_->RunOnce();
  ASSERT_EQ(sched_->Poll(w, 0)->size(), 1u);
  clock_.AdvanceMicros(1'500'000);  // no heartbeat within the 1 s lease
  sched_->RunOnce();
  v1::Job job = Get(id);
  EXPECT_EQ(job.state(), v1::JOB_RUNNING);  // retried, not failed: max_retries 0 does not apply
  EXPECT_EQ(job.stages(0).tasks(0).state(), v1::TASK_PENDING);
  EXPECT_EQ(job.stages(0).tasks(0).failure_kind(), v1::FAILURE_INFRASTRUCTURE);
  EXPECT_EQ(job.stages(0).tasks(0).task_failures(), 0);
  EXPECT_EQ(sched_->Heartbeat(w).status().code(), absl::StatusCode::kNotFound);
  auto stats = sched_->TakeStats();
  EXPECT_EQ(stats.workers_lost, 1);
  EXPECT_EQ(stats.workers_live, 0);
}

}  // namespace
}  // namespace topiary::server
