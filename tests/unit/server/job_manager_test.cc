// JobManager over the in-memory store and a fake clock: the state machine,
// ownership and idempotency without a server.
#include "server/jobs/job_manager.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <thread>

#include "common/file_util.h"
#include "testing/gated_store.h"

namespace topiary::server {
namespace {

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = *MakeTempDir("topiary-jm");
    store_ = MakeMemoryStore();
    JobManagerOptions o;
    o.storage_roots = {root_};
    o.max_queued = 5;
    jobs_ = std::make_unique<JobManager>(store_.get(), &clock_, o);
    ASSERT_TRUE(jobs_->Recover().ok());
  }
  void TearDown() override { RemoveAll(root_).IgnoreError(); }
  v1::JobSpec Spec(const std::string& name = "j") const {
    v1::JobSpec s;
    s.set_name(name);
    s.mutable_teacher()->set_path(root_ + "/teacher");
    s.add_stages()->mutable_evaluate()->set_perplexity(true);
    s.mutable_data()->mutable_eval()->set_path(root_ + "/val.bin");
    return s;
  }
  std::string root_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<JobManager> jobs_;
  Principal alice_{"alice", Principal::Role::kUser}, bob_{"bob", Principal::Role::kUser};
  Principal admin_{"root", Principal::Role::kAdmin};
};

TEST_F(JobManagerTest, CreateQueuesWithAnEventAndDefaults) {
  auto j = jobs_->Create(alice_, Spec(), "");
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->state(), v1::JOB_QUEUED);
  EXPECT_EQ(j->owner(), "alice");
  EXPECT_EQ(j->spec().resources().ranks(), 1);
  ASSERT_EQ(j->stages_size(), 1);
  EXPECT_EQ(j->stages(0).name(), "evaluate");
  EXPECT_FALSE(j->waiting_reason().empty());
  auto ev = store_->Events(j->id(), 0, 10);
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_EQ((*ev)[0].seq(), 1);
  EXPECT_EQ((*ev)[0].job_state(), v1::JOB_QUEUED);
  EXPECT_EQ(jobs_->CountByState()[v1::JOB_QUEUED], 1);
}

TEST_F(JobManagerTest, IdsIncreaseEvenWhenTheClockStands) {
  auto a = jobs_->Create(alice_, Spec(), ""), b = jobs_->Create(alice_, Spec(), "");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT(a->id(), b->id());
}

TEST_F(JobManagerTest, QueueLimitIsResourceExhausted) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(jobs_->Create(alice_, Spec(), "").ok());
  EXPECT_EQ(jobs_->Create(alice_, Spec(), "").status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(JobManagerTest, IdempotencyIsPerOwner) {
  auto a = jobs_->Create(alice_, Spec(), "req-1");
  auto a2 = jobs_->Create(alice_, Spec(), "req-1");
  auto b = jobs_->Create(bob_, Spec(), "req-1");
  ASSERT_TRUE(a.ok() && a2.ok() && b.ok());
  EXPECT_EQ(a->id(), a2->id());
  EXPECT_NE(a->id(), b->id());
  EXPECT_EQ(jobs_->Create(alice_, Spec("other"), "req-1").status().code(), absl::StatusCode::kAlreadyExists);
}

// An owner's list reads only their own jobs (the owner index), however many others have.
TEST_F(JobManagerTest, ListReadsOnlyTheCallersJobs) {
  JobManagerOptions o;
  o.storage_roots = {root_};
  o.max_queued_per_user = 100000;
  JobManager jm(store_.get(), &clock_, o);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(jm.Create(alice_, Spec(), "").ok());
  auto mine = jm.Create(bob_, Spec("bobs"), "");
  ASSERT_TRUE(mine.ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(jm.Create(alice_, Spec(), "").ok());
  auto list = jm.List(bob_, {});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->jobs.size(), 1u);
  EXPECT_EQ(list->jobs[0].id(), mine->id());
  EXPECT_EQ(list->scanned, 1);
  JobManager::ListRequest queued;
  queued.states = {v1::JOB_CANCELLED};
  ASSERT_TRUE(jm.Cancel(bob_, mine->id()).ok());
  auto cancelled = jm.List(admin_, queued);  // the state index, for an admin
  ASSERT_TRUE(cancelled.ok());
  ASSERT_EQ(cancelled->jobs.size(), 1u);
  EXPECT_EQ(cancelled->scanned, 1);
  JobManager::ListRequest page;
  page.page_size = 7;
  auto first = jm.List(alice_, page);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->jobs.size(), 7u);
  page.page_token = first->next_page_token;
  auto second = jm.List(alice_, page);
  ASSERT_TRUE(second.ok());
  EXPECT_LT(second->jobs[0].id(), first->jobs.back().id());  // newest first, no overlap
}

TEST_F(JobManagerTest, QueuedJobsPerUserAreCapped) {
  JobManagerOptions o;
  o.storage_roots = {root_};
  o.max_queued_per_user = 3;
  JobManager jm(store_.get(), &clock_, o);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(jm.Create(alice_, Spec(), "")->id());
  auto refused = jm.Create(alice_, Spec(), "");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("alice has 3 jobs queued"), std::string::npos) << refused.status();
  EXPECT_TRUE(jm.Create(bob_, Spec(), "").ok());  // others are not held back
  ASSERT_TRUE(jm.Cancel(alice_, ids[0]).ok());    // one leaves the queue: room again
  EXPECT_TRUE(jm.Create(alice_, Spec(), "").ok());
  JobManager restarted(store_.get(), &clock_, o);  // the count survives a restart
  ASSERT_TRUE(restarted.Recover().ok());
  EXPECT_EQ(restarted.Create(alice_, Spec(), "").status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(JobManagerTest, FinishedJobsAreDeletedAfterTheRetention) {
  JobManagerOptions o;
  o.storage_roots = {root_};
  o.retention_micros = 3600'000'000;
  JobManager jm(store_.get(), &clock_, o);
  const std::string old_done = jm.Create(alice_, Spec(), "r1")->id();
  ASSERT_TRUE(jm.Cancel(alice_, old_done).ok());
  const std::string running = jm.Create(alice_, Spec(), "")->id();
  clock_.AdvanceMicros(3000'000'000);
  const std::string recent_done = jm.Create(alice_, Spec(), "")->id();
  ASSERT_TRUE(jm.Cancel(alice_, recent_done).ok());
  EXPECT_EQ(*jm.DeleteExpired(), 0);
  clock_.AdvanceMicros(700'000'000);  // the first finished job is now older than an hour
  EXPECT_EQ(*jm.DeleteExpired(), 1);
  EXPECT_EQ(jm.Get(alice_, old_done).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->Events(old_done, 0, 10)->empty());
  EXPECT_TRUE(jm.Get(alice_, recent_done).ok());
  EXPECT_TRUE(jm.Get(alice_, running).ok());                   // never a job that has not finished
  EXPECT_NE(jm.Create(alice_, Spec(), "r1")->id(), old_done);  // its idempotency key went too
}

TEST_F(JobManagerTest, WatchStreamsAreCappedPerUserAndInAll) {
  JobManagerOptions o;
  o.storage_roots = {root_};
  o.max_watches_per_user = 2;
  o.max_watches = 3;
  JobManager jm(store_.get(), &clock_, o);
  auto a1 = jm.OpenWatch(alice_), a2 = jm.OpenWatch(alice_);
  ASSERT_TRUE(a1.ok() && a2.ok());
  EXPECT_EQ(jm.OpenWatch(alice_).status().code(), absl::StatusCode::kResourceExhausted);
  auto b1 = jm.OpenWatch(bob_);
  ASSERT_TRUE(b1.ok());
  EXPECT_EQ(jm.OpenWatch(bob_).status().code(), absl::StatusCode::kResourceExhausted);  // 3 in all
  { JobManager::WatchSlot gone = std::move(*a1); }  // a stream ends: its place is free again
  EXPECT_TRUE(jm.OpenWatch(bob_).ok());
}

TEST_F(JobManagerTest, CancelDeleteAndWatchWakeUp) {
  auto j = jobs_->Create(alice_, Spec(), "r");
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(jobs_->Delete(alice_, j->id()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(jobs_->Report(alice_, j->id()).status().code(), absl::StatusCode::kFailedPrecondition);
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_TRUE(jobs_->Cancel(alice_, j->id()).ok());
  });
  auto ev = jobs_->WaitEvents(alice_, j->id(), 1, 5000);  // blocks until the cancel
  canceller.join();
  ASSERT_TRUE(ev.ok()) << ev.status();
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_EQ((*ev)[0].seq(), 2);
  EXPECT_EQ((*ev)[0].job_state(), v1::JOB_CANCELLED);
  auto now = jobs_->Get(alice_, j->id());
  EXPECT_EQ(now->stages(0).state(), v1::STAGE_CANCELLED);
  EXPECT_EQ(jobs_->Cancel(alice_, j->id()).status().code(), absl::StatusCode::kFailedPrecondition);
  auto report = jobs_->Report(alice_, j->id());
  ASSERT_TRUE(report.ok());
  EXPECT_NE(report->report_json().find("JOB_CANCELLED"), std::string::npos);
  EXPECT_TRUE(jobs_->WaitEvents(alice_, j->id(), 2, 5000)->empty());  // finished: returns at once
  EXPECT_TRUE(jobs_->Delete(alice_, j->id()).ok());
  EXPECT_EQ(jobs_->Get(alice_, j->id()).status().code(), absl::StatusCode::kNotFound);
  // The idempotency key went with the job: the same request id makes a new job.
  auto again = jobs_->Create(alice_, Spec(), "r");
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again->id(), j->id());
  jobs_->Shutdown();
  EXPECT_EQ(jobs_->WaitEvents(alice_, again->id(), 1, 5000).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(JobManagerTest, OwnersSeeTheirOwnJobsAdminsAll) {
  auto a = jobs_->Create(alice_, Spec(), "");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(jobs_->Get(bob_, a->id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(jobs_->Cancel(bob_, a->id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(jobs_->Get(admin_, a->id()).ok());
  EXPECT_TRUE(jobs_->List(bob_, {})->jobs.empty());
  EXPECT_EQ(jobs_->List(admin_, {})->jobs.size(), 1u);
}

TEST_F(JobManagerTest, ListPagesNewestFirstWithFilters) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    v1::JobSpec s = Spec();
    (*s.mutable_labels())["parity"] = i % 2 ? "odd" : "even";
    ids.push_back(jobs_->Create(alice_, s, "")->id());
  }
  ASSERT_TRUE(jobs_->Cancel(alice_, ids[1]).ok());
  JobManager::ListRequest r;
  r.page_size = 2;
  std::vector<std::string> seen;
  for (int page = 0; page < 10; ++page) {
    auto resp = jobs_->List(alice_, r);
    ASSERT_TRUE(resp.ok()) << resp.status();
    for (const auto& j : resp->jobs) seen.push_back(j.id());
    if (resp->next_page_token.empty()) break;
    r.page_token = resp->next_page_token;
  }
  EXPECT_EQ(seen, std::vector<std::string>(ids.rbegin(), ids.rend()));
  JobManager::ListRequest f;
  f.labels["parity"] = "odd";
  EXPECT_EQ(jobs_->List(alice_, f)->jobs.size(), 2u);
  f.states = {v1::JOB_CANCELLED};
  ASSERT_EQ(jobs_->List(alice_, f)->jobs.size(), 1u);
  EXPECT_EQ(jobs_->List(alice_, f)->jobs[0].id(), ids[1]);
  JobManager::ListRequest bad;
  bad.page_token = "garbage!";
  EXPECT_EQ(jobs_->List(alice_, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, InvalidSpecsAreRefusedWithTheFieldPath) {
  v1::JobSpec s = Spec();
  s.mutable_teacher()->set_path("/etc");
  auto r = jobs_->Create(alice_, s, "");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message().rfind("spec.teacher.path", 0), 0u) << r.status();
  EXPECT_TRUE(jobs_->List(admin_, {})->jobs.empty());  // nothing was stored
}

// A job's transition syncs under that job's lock only: while one write is
// stuck (a slow fsync), reads, lists, creates, watches and other jobs'
// transitions all go on.
TEST_F(JobManagerTest, ASlowSyncOfOneJobHoldsUpNothingElse) {
  testing::GatedStore gated(MakeMemoryStore());
  JobManagerOptions o;
  o.storage_roots = {root_};
  JobManager jobs(&gated, &clock_, o);
  ASSERT_TRUE(jobs.Recover().ok());
  const std::string a = jobs.Create(alice_, Spec("a"), "")->id();
  std::string b = jobs.Create(alice_, Spec("b"), "")->id();
  // b on another lock stripe than a (jobs that share one do wait for each other: 1 in 64).
  while (JobManager::LockStripe(b) == JobManager::LockStripe(a)) b = jobs.Create(alice_, Spec("b"), "")->id();
  auto touch = [](v1::Job& j) -> absl::StatusOr<std::vector<v1::Event>> {
    j.set_waiting_reason("touched");
    return std::vector<v1::Event>();
  };
  gated.Hold(a);
  std::thread slow([&] { EXPECT_TRUE(jobs.Update(a, touch).ok()); });
  const bool blocked = gated.WaitUntilBlocked(std::chrono::seconds(5));
  auto others = std::async(std::launch::async, [&] {
    EXPECT_TRUE(jobs.Get(alice_, a).ok());
    EXPECT_TRUE(jobs.List(alice_, {}).ok());
    EXPECT_TRUE(jobs.Create(bob_, Spec("c"), "").ok());
    EXPECT_TRUE(jobs.Update(b, touch).ok());
    EXPECT_TRUE(jobs.WaitEvents(alice_, b, 0, 0).ok());
    EXPECT_TRUE(jobs.Cancel(alice_, b).ok());
    EXPECT_TRUE(jobs.OpenWatch(alice_).ok());
    EXPECT_EQ(jobs.CountByState()[v1::JOB_CANCELLED], 1);
  });
  const bool went_on = others.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  gated.Release();
  slow.join();
  others.wait();
  EXPECT_TRUE(blocked);
  EXPECT_TRUE(went_on) << "a call waited for another job's store write";
  EXPECT_EQ(jobs.Get(alice_, a)->waiting_reason(), "touched");
}

}  // namespace
}  // namespace topiary::server
