// The gang scheduler end to end: the real coordinator and fake worker
// processes (tests/tools/fake_worker.cc) speaking the worker API over
// loopback. Stages in order, gang placement across workers, waiting reasons,
// retries counted and not counted, lost workers, cancellation reaching
// running ranks, a coordinator killed mid-run, and the scheduler's metrics.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/file_util.h"
#include "testing/coordinator_process.h"
#include "testing/processes.h"
#include "topiary/v1/job_service.grpc.pb.h"
#include "topiary/v1/worker_service.grpc.pb.h"

namespace topiary {
namespace {

using testing::BinDir;
using testing::Coordinator;

constexpr char kUser[] = "user-token-0123456789ab";
constexpr char kWorker[] = "worker-token-0123456789";

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = *MakeTempDir("topiary-sched");
    std::filesystem::create_directories(dir_ + "/root/models/t");
    std::ofstream(dir_ + "/tokens") << kUser << " alice user\n" << kWorker << " workers worker\n";
  }
  void TearDown() override {
    for (pid_t p : workers_) kill(p, SIGKILL), waitpid(p, nullptr, 0);
    coordinator_.reset();
    if (!getenv("KEEP")) RemoveAll(dir_).IgnoreError();
  }
  void StartCoordinator(std::vector<std::string> extra = {}, const std::string& listen = "") {
    // Leases of 3 s: short enough for the lost-worker test, long enough that
    // a loaded CI machine running tests in parallel does not lose a live worker.
    extra.insert(extra.end(), {"--lease-seconds", "3", "--backoff-seconds", "0.2"});
    coordinator_ = std::make_unique<Coordinator>(dir_, extra);
    if (!listen.empty()) coordinator_->set_listen(listen);
    coordinator_->Start();
  }
  pid_t StartWorker(const std::string& name, int slots, int steps = 3, int step_ms = 50, int fail_attempts = 0) {
    pid_t p = testing::SpawnProcess(
        {BinDir() + "/fake_worker", "--server", "127.0.0.1:" + std::to_string(coordinator_->port()), "--token", kWorker,
         "--name", name, "--slots", std::to_string(slots), "--steps", std::to_string(steps), "--step-ms",
         std::to_string(step_ms), "--fail-attempts", std::to_string(fail_attempts)},
        dir_ + "/" + name + ".log");
    workers_.push_back(p);
    return p;
  }
  std::string WorkerLog(const std::string& name) {
    return ReadFileToString(dir_ + "/" + name + ".log", 1 << 20).value_or("");
  }
  std::unique_ptr<grpc::ClientContext> Ctx() {
    auto c = std::make_unique<grpc::ClientContext>();
    c->AddMetadata("authorization", std::string("Bearer ") + kUser);
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return c;
  }
  // stages: "importance" (multi-rank) or "evaluate" (one rank), in order.
  std::string Submit(const std::vector<std::string>& stages, int ranks = 1, int max_retries = 0, int priority = 0) {
    v1::CreateJobRequest r;
    v1::JobSpec* s = r.mutable_spec();
    s->set_name("s");
    s->mutable_teacher()->set_path(dir_ + "/root/models/t");
    s->mutable_data()->mutable_calibration()->set_path(dir_ + "/root/c.bin");
    s->mutable_data()->mutable_eval()->set_path(dir_ + "/root/v.bin");
    for (const std::string& k : stages) {
      if (k == "importance") s->add_stages()->mutable_importance();
      if (k == "evaluate") s->add_stages()->mutable_evaluate()->set_perplexity(true);
      if (k == "search") {
        s->add_stages()->mutable_prune()->mutable_search()->set_params("0.5");
        s->mutable_stages(s->stages_size() - 1)->mutable_prune()->mutable_search()->set_candidates(6);
      }
    }
    s->mutable_resources()->set_ranks(ranks);
    s->set_max_retries(max_retries);
    s->set_priority(priority);
    v1::Job job;
    grpc::Status st = coordinator_->api().CreateJob(Ctx().get(), r, &job);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return job.id();
  }
  v1::Job Get(const std::string& id) {
    v1::GetJobRequest req;
    req.set_id(id);
    v1::Job job;
    EXPECT_TRUE(coordinator_->api().GetJob(Ctx().get(), req, &job).ok());
    return job;
  }
  // Polls until `pred` holds or 20 s pass.
  v1::Job WaitFor(const std::string& id, const std::function<bool(const v1::Job&)>& pred) {
    v1::Job job;
    for (int i = 0; i < 400; ++i) {
      job = Get(id);
      if (pred(job)) return job;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "timed out; job is " << job.DebugString();
    return job;
  }
  static bool Finished(const v1::Job& j) {
    return j.state() == v1::JOB_SUCCEEDED || j.state() == v1::JOB_FAILED || j.state() == v1::JOB_CANCELLED;
  }
  std::vector<v1::Event> Events(const std::string& id) {
    v1::WatchJobRequest req;
    req.set_id(id);
    auto ctx = Ctx();
    auto reader = coordinator_->api().WatchJob(ctx.get(), req);
    std::vector<v1::Event> out;
    v1::WatchJobResponse r;
    while (reader->Read(&r)) {
      if (r.has_event()) out.push_back(r.event());
    }
    EXPECT_TRUE(reader->Finish().ok());
    return out;
  }

  std::string dir_;
  std::unique_ptr<Coordinator> coordinator_;
  std::vector<pid_t> workers_;
};

TEST_F(SchedulerTest, RunsStagesInOrderWithProgressAndAReport) {
  StartCoordinator();
  StartWorker("w1", 1);
  const std::string id = Submit({"importance", "evaluate", "evaluate"});
  v1::Job job = WaitFor(id, Finished);
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.DebugString();
  for (const v1::Stage& s : job.stages()) {
    EXPECT_EQ(s.state(), v1::STAGE_SUCCEEDED);
    EXPECT_GE(s.end_time_micros(), s.start_time_micros());
    EXPECT_EQ(s.tasks(0).progress().step(), 3);
  }
  EXPECT_LE(job.stages(0).end_time_micros(), job.stages(1).start_time_micros());
  EXPECT_NE(job.output_path().find("/jobs/" + id + "/evaluate-2"), std::string::npos);
  std::vector<v1::Event> ev = Events(id);
  std::vector<std::string> order;
  int progress = 0;
  for (const v1::Event& e : ev) {
    if (e.kind() == v1::EVENT_KIND_STAGE_STATE && e.stage_state() == v1::STAGE_SUCCEEDED) order.push_back(e.stage());
    progress += e.kind() == v1::EVENT_KIND_PROGRESS;
  }
  EXPECT_EQ(order, (std::vector<std::string>{"importance", "evaluate", "evaluate-2"}));
  EXPECT_EQ(progress, 9);
  for (size_t i = 0; i < ev.size(); ++i) EXPECT_EQ(ev[i].seq(), static_cast<int64_t>(i + 1));  // no gaps
}

// A search stage fans out one probe per candidate, in parallel where slots
// allow, and fans in to the lowest loss; the next stage's assignment carries
// the choice.
TEST_F(SchedulerTest, SearchFansOutToProbesAndInToTheBest) {
  StartCoordinator();
  StartWorker("w", 3, 3, 50);
  const std::string id = Submit({"importance", "search", "evaluate"});
  v1::Job job = WaitFor(id, Finished);
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.DebugString();
  const v1::Stage& search = job.stages(1);
  EXPECT_EQ(search.name(), "search");
  ASSERT_EQ(search.tasks_size(), 6);
  for (const v1::Task& t : search.tasks()) EXPECT_EQ(t.state(), v1::TASK_SUCCEEDED);
  EXPECT_NE(search.result_json().find("\"best_task\":4"), std::string::npos) << search.result_json();
  // Parallel: three probes were assigned before the first one finished.
  int assigned_before_first_done = 0;
  for (const v1::Event& e : Events(id)) {
    if (e.kind() != v1::EVENT_KIND_TASK_STATE || e.stage() != "search") continue;
    if (e.task_state() == v1::TASK_SUCCEEDED) break;
    assigned_before_first_done += e.task_state() == v1::TASK_ASSIGNED;
  }
  EXPECT_EQ(assigned_before_first_done, 3);
  const std::string log = WorkerLog("w");
  const size_t start = log.find("start " + id + "/evaluate rank 0");
  ASSERT_NE(start, std::string::npos) << log;
  const std::string line = log.substr(start, log.find('\n', start) - start);
  EXPECT_NE(line.find(" search={\"best\""), std::string::npos) << line;  // the choice reaches the next stage
  v1::GetJobReportRequest rr;
  rr.set_id(id);
  v1::JobReport report;
  ASSERT_TRUE(coordinator_->api().GetJobReport(Ctx().get(), rr, &report).ok());
  EXPECT_NE(report.report_json().find("\"best\": 4"), std::string::npos) << report.report_json();
}

TEST_F(SchedulerTest, GangPlacesAcrossWorkersOrNotAtAllAndSaysWhy) {
  StartCoordinator();
  StartWorker("a", 2, 40, 50);
  StartWorker("b", 2, 40, 50);
  const std::string three = Submit({"importance"}, 3);
  v1::Job job = WaitFor(three, [](const v1::Job& j) { return j.state() == v1::JOB_RUNNING; });
  ASSERT_EQ(job.stages(0).tasks(0).workers_size(), 3);
  std::set<std::string> hosts(job.stages(0).tasks(0).workers().begin(), job.stages(0).tasks(0).workers().end());
  EXPECT_EQ(hosts.size(), 2u);                         // 3 ranks over two 2-slot workers
  const std::string five = Submit({"importance"}, 5);  // can never fit in 4 slots
  v1::Job waiting = WaitFor(five, [](const v1::Job& j) {
    return !j.waiting_reason().empty() && j.waiting_reason() != "waiting for the scheduler";
  });
  EXPECT_EQ(waiting.state(), v1::JOB_QUEUED);
  EXPECT_NE(
      waiting.waiting_reason().find("unschedulable: needs 5 ranks of 1 slots, the registered workers hold at most 4"),
      std::string::npos)
      << waiting.waiting_reason();
  // It reserves nothing: a one-rank job behind it takes the free slot at once.
  const std::string one = Submit({"evaluate"}, 1);
  v1::Job small = WaitFor(one, [](const v1::Job& j) { return j.state() != v1::JOB_QUEUED; });
  EXPECT_NE(small.state(), v1::JOB_QUEUED);
  EXPECT_EQ(WaitFor(three, Finished).state(), v1::JOB_SUCCEEDED);
}

TEST_F(SchedulerTest, TaskFailuresCountAgainstMaxRetries) {
  StartCoordinator();
  StartWorker("flaky", 1, 2, 20, /*fail_attempts=*/1);
  const std::string retried = Submit({"evaluate"}, 1, /*max_retries=*/1);
  v1::Job ok = WaitFor(retried, Finished);
  ASSERT_EQ(ok.state(), v1::JOB_SUCCEEDED) << ok.DebugString();
  EXPECT_EQ(ok.stages(0).tasks(0).attempt(), 2);
  EXPECT_EQ(ok.stages(0).tasks(0).task_failures(), 1);
  const std::string doomed = Submit({"evaluate"}, 1, /*max_retries=*/0);
  v1::Job failed = WaitFor(doomed, Finished);
  ASSERT_EQ(failed.state(), v1::JOB_FAILED);
  EXPECT_NE(failed.error().find("injected failure on attempt 1"), std::string::npos) << failed.error();
  EXPECT_EQ(failed.stages(0).state(), v1::STAGE_FAILED);
}

TEST_F(SchedulerTest, ALostWorkerIsAnInfrastructureFailureAndTheTaskMovesOn) {
  StartCoordinator();
  pid_t slow = StartWorker("doomed", 1, 200, 50);
  const std::string id = Submit({"evaluate"}, 1, /*max_retries=*/0);
  WaitFor(id, [](const v1::Job& j) {
    return j.stages(0).tasks_size() > 0 && j.stages(0).tasks(0).state() == v1::TASK_RUNNING;
  });
  kill(slow, SIGKILL);
  StartWorker("rescuer", 1, 2, 20);
  v1::Job job = WaitFor(id, Finished);
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.DebugString();  // max_retries 0, yet it succeeded
  EXPECT_EQ(job.stages(0).tasks(0).attempt(), 2);
  EXPECT_EQ(job.stages(0).tasks(0).task_failures(), 0);
  bool infra = false;
  for (const v1::Event& e : Events(id))
    infra = infra || e.message().find("infrastructure failure") != std::string::npos;
  EXPECT_TRUE(infra);
}

TEST_F(SchedulerTest, CancelReachesRunningRanks) {
  StartCoordinator();
  StartWorker("w", 2, 400, 50);
  const std::string id = Submit({"importance"}, 2);
  WaitFor(id, [](const v1::Job& j) {
    return j.stages(0).tasks_size() > 0 && j.stages(0).tasks(0).state() == v1::TASK_RUNNING;
  });
  v1::CancelJobRequest req;
  req.set_id(id);
  v1::Job out;
  ASSERT_TRUE(coordinator_->api().CancelJob(Ctx().get(), req, &out).ok());
  EXPECT_EQ(out.state(), v1::JOB_CANCELLING);
  const auto t0 = std::chrono::steady_clock::now();
  v1::Job job = WaitFor(id, Finished);
  EXPECT_EQ(job.state(), v1::JOB_CANCELLED);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  const std::string log = WorkerLog("w");
  EXPECT_NE(log.find("cancelled " + id + "/importance rank 0"), std::string::npos) << log;
  EXPECT_NE(log.find("cancelled " + id + "/importance rank 1"), std::string::npos) << log;
}

// kill -9 of the coordinator while a task runs: the restarted coordinator
// recovers the job, the worker (same id, same address) keeps its lease, and
// the job finishes.
TEST_F(SchedulerTest, CoordinatorKilledMidRunRecovers) {
  const std::string listen = "127.0.0.1:" + std::to_string(testing::FreePort());
  StartCoordinator({"--recovery-grace-seconds", "15"}, listen);
  StartWorker("w", 1, 40, 50);
  const std::string id = Submit({"evaluate", "evaluate"});
  WaitFor(id, [](const v1::Job& j) {
    return j.stages(0).tasks_size() > 0 && j.stages(0).tasks(0).state() == v1::TASK_RUNNING;
  });
  EXPECT_EQ(coordinator_->Kill(SIGKILL), -SIGKILL);
  coordinator_->Start();
  v1::Job job = WaitFor(id, Finished);
  EXPECT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.DebugString();
  EXPECT_EQ(job.stages(0).tasks(0).attempt(), 1) << "the running rank was not kept across the restart";
}

TEST_F(SchedulerTest, MetricsShowWorkersSlotsAndRunningJobs) {
  StartCoordinator();
  StartWorker("m", 3, 400, 50);
  const std::string id = Submit({"importance"}, 2);
  WaitFor(id,
          [](const v1::Job& j) { return j.stages(0).tasks_size() > 0 && j.stages(0).tasks(0).progress().step() >= 2; });
  std::string text;
  for (int i = 0; i < 50 && text.find("topiary_train_loss") == std::string::npos; ++i) {
    text = testing::ScrapeMetrics(coordinator_->metrics_port());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(text.find("topiary_workers{state=\"live\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("topiary_slots{state=\"used\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("topiary_slots{state=\"free\"} 1"), std::string::npos);
  EXPECT_NE(text.find("topiary_train_loss{job_id=\"" + id + "\"}"), std::string::npos);
  EXPECT_NE(text.find("topiary_train_mfu_ratio{job_id=\"" + id + "\"} 0.5"), std::string::npos);
  EXPECT_NE(text.find("topiary_schedule_latency_seconds_count"), std::string::npos);
  std::ofstream(dir_ + "/scrape.txt") << text;
  auto r = testing::RunProcesses({{"/bin/sh", "-c", "promtool check metrics < " + dir_ + "/scrape.txt"}}, dir_,
                                 std::chrono::seconds(60));
  EXPECT_EQ(r[0].exit_code, 0) << r[0].output;
  v1::CancelJobRequest req;
  req.set_id(id);
  v1::Job out;
  ASSERT_TRUE(coordinator_->api().CancelJob(Ctx().get(), req, &out).ok());
  WaitFor(id, Finished);
  text = testing::ScrapeMetrics(coordinator_->metrics_port());
  EXPECT_EQ(text.find("topiary_train_loss{job_id=\"" + id + "\"}"), std::string::npos);  // gone with the job
}

// The worker protocol over gRPC against the real coordinator: the test
// registers two workers itself. The rendezvous of a task waits for its key,
// is scoped to the task's attempt and to workers with a rank of it; a worker
// cannot act for another (wrong secret), nor a user token for any worker.
TEST_F(SchedulerTest, WorkerIdentityAndRendezvousScopeOverGrpc) {
  StartCoordinator();
  auto stub = v1::WorkerService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(coordinator_->port()), grpc::InsecureChannelCredentials()));
  auto ctx = [](const char* token) {
    auto c = std::make_unique<grpc::ClientContext>();
    c->AddMetadata("authorization", std::string("Bearer ") + token);
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return c;
  };
  auto reg = [&](const std::string& name) {
    v1::RegisterWorkerRequest r;
    r.set_name(name);
    r.set_slots(1);
    v1::RegisterWorkerResponse resp;
    EXPECT_TRUE(stub->RegisterWorker(ctx(kWorker).get(), r, &resp).ok());
    return resp;
  };
  const v1::RegisterWorkerResponse mine = reg("mine");
  const std::string id = Submit({"evaluate"});
  v1::PollAssignmentsRequest poll;
  poll.set_worker_id(mine.worker_id());
  poll.set_secret(mine.secret());
  poll.set_wait_micros(10'000'000);
  v1::PollAssignmentsResponse assigned;
  ASSERT_TRUE(stub->PollAssignments(ctx(kWorker).get(), poll, &assigned).ok());
  ASSERT_EQ(assigned.assignments_size(), 1);
  const v1::Assignment a = assigned.assignments(0);
  const v1::RegisterWorkerResponse other = reg("other");  // registered after placement: no rank of the task

  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    v1::RendezvousSetRequest set;
    set.set_worker_id(mine.worker_id());
    set.set_secret(mine.secret());
    set.set_task_id(a.task_id());
    set.set_attempt(a.attempt());
    set.set_key("rank0-address");
    set.set_value("10.0.0.7:29500");
    v1::RendezvousSetResponse resp;
    EXPECT_TRUE(stub->RendezvousSet(ctx(kWorker).get(), set, &resp).ok());
  });
  v1::RendezvousGetRequest get;
  get.set_worker_id(mine.worker_id());
  get.set_secret(mine.secret());
  get.set_task_id(a.task_id());
  get.set_attempt(a.attempt());
  get.set_key("rank0-address");
  get.set_wait_micros(10'000'000);
  v1::RendezvousGetResponse got;
  ASSERT_TRUE(stub->RendezvousGet(ctx(kWorker).get(), get, &got).ok());  // waits for the setter
  setter.join();
  EXPECT_TRUE(got.found());
  EXPECT_EQ(got.value(), "10.0.0.7:29500");
  v1::RendezvousGetRequest g = get;
  g.set_attempt(a.attempt() + 1);  // another attempt of the task: refused
  EXPECT_EQ(stub->RendezvousGet(ctx(kWorker).get(), g, &got).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  g = get;
  g.set_worker_id(other.worker_id());  // a worker without a rank of the task
  g.set_secret(other.secret());
  EXPECT_EQ(stub->RendezvousGet(ctx(kWorker).get(), g, &got).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  g = get;
  g.set_secret(other.secret());  // impersonation: mine's id with other's secret
  EXPECT_EQ(stub->RendezvousGet(ctx(kWorker).get(), g, &got).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(stub->RendezvousGet(ctx(kUser).get(), get, &got).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  v1::RendezvousSetRequest big;
  big.set_worker_id(mine.worker_id());
  big.set_secret(mine.secret());
  big.set_task_id(a.task_id());
  big.set_attempt(a.attempt());
  big.set_key("big");
  big.set_value(std::string(65 * 1024, 'x'));
  v1::RendezvousSetResponse set_resp;
  EXPECT_EQ(stub->RendezvousSet(ctx(kWorker).get(), big, &set_resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::CompleteTaskRequest done;  // the other worker completing mine's rank: refused, nothing changes
  done.set_worker_id(mine.worker_id());
  done.set_secret(other.secret());
  done.set_task_id(a.task_id());
  done.set_attempt(a.attempt());
  done.set_ok(true);
  v1::CompleteTaskResponse done_resp;
  EXPECT_EQ(stub->CompleteTask(ctx(kWorker).get(), done, &done_resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  v1::HeartbeatRequest hb;
  hb.set_worker_id(mine.worker_id());
  hb.set_secret(other.secret());
  v1::HeartbeatResponse hb_resp;
  EXPECT_EQ(stub->Heartbeat(ctx(kWorker).get(), hb, &hb_resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Get(id).stages(0).tasks(0).state(), v1::TASK_ASSIGNED);
  done.set_secret(mine.secret());
  ASSERT_TRUE(stub->CompleteTask(ctx(kWorker).get(), done, &done_resp).ok());
  EXPECT_EQ(WaitFor(id, Finished).state(), v1::JOB_SUCCEEDED);
  // The task's keys went with it.
  EXPECT_EQ(stub->RendezvousGet(ctx(kWorker).get(), get, &got).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

}  // namespace
}  // namespace topiary
