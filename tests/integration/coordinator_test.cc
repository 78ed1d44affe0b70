// The real topiary-coordinator binary on port 0 with a temporary RocksDB
// directory, driven over gRPC on loopback: validation, idempotency,
// pagination, cancel and delete, watch with resume, authentication and
// ownership, health, SIGTERM, and kill -9 plus a power cut with nothing acknowledged lost.
#include <grpcpp/grpcpp.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/store/backup.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "testing/coordinator_process.h"
#include "testing/power_cut.h"
#include "testing/processes.h"
#include "topiary/v1/job_service.grpc.pb.h"

namespace topiary {
namespace {

using testing::BinDir;
using testing::Coordinator;
using testing::SpawnProcess;

constexpr char kAlice[] = "alice-token-0123456789";
constexpr char kBob[] = "bob-token-0123456789abc";
constexpr char kRoot[] = "root-token-0123456789ab";
constexpr char kWorker[] = "worker-token-0123456789";

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = *MakeTempDir("topiary-coord");
    std::filesystem::create_directories(dir_ + "/root/models/t");
    std::ofstream(dir_ + "/tokens") << "# token principal role\n"
                                    << kAlice << " alice user\n"
                                    << kBob << " bob user\n"
                                    << kRoot << " root admin\n"
                                    << kWorker << " w1 worker\n";
    coordinator_ = std::make_unique<Coordinator>(dir_);
    coordinator_->Start();
  }
  void TearDown() override {
    coordinator_.reset();
    RemoveAll(dir_).IgnoreError();
  }
  std::unique_ptr<grpc::ClientContext> Ctx(const char* token) {
    auto c = std::make_unique<grpc::ClientContext>();
    if (token != nullptr) c->AddMetadata("authorization", std::string("Bearer ") + token);
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return c;
  }
  v1::CreateJobRequest Request(const std::string& name, const std::string& request_id = "") {
    v1::CreateJobRequest r;
    r.set_request_id(request_id);
    v1::JobSpec* s = r.mutable_spec();
    s->set_name(name);
    s->mutable_teacher()->set_path(dir_ + "/root/models/t");
    s->add_stages()->mutable_evaluate()->set_perplexity(true);
    s->mutable_data()->mutable_eval()->set_path(dir_ + "/root/val.bin");
    return r;
  }
  grpc::Status Create(const char* token, const v1::CreateJobRequest& r, v1::Job* job) {
    return coordinator_->api().CreateJob(Ctx(token).get(), r, job);
  }
  std::string dir_;
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(CoordinatorTest, InvalidSpecsNameTheFieldAndStoreNothing) {
  v1::Job job;
  v1::CreateJobRequest r = Request("bad");
  r.mutable_spec()->mutable_stages(0)->clear_evaluate();
  r.mutable_spec()->add_stages()->mutable_prune()->mutable_target()->set_hidden_size(-5);
  grpc::Status st = Create(kAlice, r, &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message().rfind("spec.stages[0]", 0), 0u) << st.error_message();
  r = Request("escape");
  r.mutable_spec()->mutable_teacher()->set_path(dir_ + "/root/../../etc");
  st = Create(kAlice, r, &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("spec.teacher.path"), std::string::npos);
  std::filesystem::create_directory_symlink("/etc", dir_ + "/root/link");
  r.mutable_spec()->mutable_teacher()->set_path(dir_ + "/root/link");
  st = Create(kAlice, r, &job);
  EXPECT_NE(st.error_message().find("outside the storage roots"), std::string::npos) << st.error_message();
  // Oversized input is refused quickly, naming the field, and the server stays healthy.
  auto timed = [&](const v1::CreateJobRequest& req, const std::string& field) {
    const auto t0 = std::chrono::steady_clock::now();
    grpc::Status s = Create(kAlice, req, &job);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1)) << field;
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_NE(s.error_message().find(field), std::string::npos) << s.error_message();
  };
  r = Request("long-path");
  std::string deep = dir_ + "/root";
  while (deep.size() < (900 << 10)) deep += "/a";  // 450K components
  r.mutable_spec()->mutable_teacher()->set_path(deep);
  timed(r, "spec.teacher.path");
  while (deep.size() < (2 << 20)) deep += "/a";  // 2 MB: over the whole spec's cap
  r.mutable_spec()->mutable_teacher()->set_path(deep);
  timed(r, "spec: ");
  r = Request("many-probes");
  r.mutable_spec()->mutable_data()->mutable_calibration()->set_path(dir_ + "/root/c.bin");
  r.mutable_spec()->add_stages()->mutable_importance();
  v1::SearchSpec* search = r.mutable_spec()->add_stages()->mutable_prune()->mutable_search();
  search->set_params("0.5");
  search->set_candidates(100000000);
  timed(r, "spec.stages[2].prune.search.candidates");
  search->set_candidates(int64_t{1} << 31);
  timed(r, "spec.stages[2].prune.search.candidates");
  r = Request("nan");
  r.mutable_spec()->mutable_data()->mutable_train()->set_path(dir_ + "/root/t.bin");
  r.mutable_spec()->add_stages()->mutable_teacher_correction()->set_tokens("1M");
  r.mutable_spec()->mutable_stages(1)->mutable_teacher_correction()->set_lr(std::nan(""));
  timed(r, "spec.stages[1].teacher_correction.lr");
  r = Request("huge");
  for (int i = 0; i < 40; ++i) r.mutable_spec()->add_stages()->mutable_evaluate();
  timed(r, "spec.stages");
  r = Request("labels");
  for (int i = 0; i < 100; ++i) (*r.mutable_spec()->mutable_labels())[absl::StrCat("k", i)] = "v";
  timed(r, "spec.labels");
  v1::ListJobsResponse list;
  ASSERT_TRUE(coordinator_->api().ListJobs(Ctx(kRoot).get(), {}, &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);
}

TEST_F(CoordinatorTest, RequestIdMakesCreateIdempotent) {
  v1::Job a, b, c;
  ASSERT_TRUE(Create(kAlice, Request("x", "req-7"), &a).ok());
  ASSERT_TRUE(Create(kAlice, Request("x", "req-7"), &b).ok());
  EXPECT_EQ(a.id(), b.id());
  EXPECT_EQ(a.create_time_micros(), b.create_time_micros());
  EXPECT_EQ(Create(kAlice, Request("y", "req-7"), &c).error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(CoordinatorTest, ListPagesNewestFirst) {
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) {
    v1::Job j;
    v1::CreateJobRequest r = Request("job" + std::to_string(i));
    (*r.mutable_spec()->mutable_labels())["batch"] = i < 3 ? "a" : "b";
    ASSERT_TRUE(Create(kAlice, r, &j).ok());
    ids.push_back(j.id());
  }
  v1::ListJobsRequest req;
  req.set_page_size(3);
  std::vector<std::string> seen;
  std::vector<int> sizes;
  for (;;) {
    v1::ListJobsResponse resp;
    ASSERT_TRUE(coordinator_->api().ListJobs(Ctx(kAlice).get(), req, &resp).ok());
    sizes.push_back(resp.jobs_size());
    for (const auto& j : resp.jobs()) seen.push_back(j.id());
    if (resp.next_page_token().empty()) break;
    req.set_page_token(resp.next_page_token());
  }
  EXPECT_EQ(sizes, (std::vector<int>{3, 3, 1}));
  EXPECT_EQ(seen, std::vector<std::string>(ids.rbegin(), ids.rend()));
  v1::ListJobsRequest by_label;
  (*by_label.mutable_labels())["batch"] = "a";
  v1::ListJobsResponse resp;
  ASSERT_TRUE(coordinator_->api().ListJobs(Ctx(kAlice).get(), by_label, &resp).ok());
  EXPECT_EQ(resp.jobs_size(), 3);
  v1::ListJobsRequest bad;
  bad.set_page_token("not-a-token");
  EXPECT_EQ(coordinator_->api().ListJobs(Ctx(kAlice).get(), bad, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(CoordinatorTest, CancelDeleteAndReport) {
  v1::Job job, out;
  ASSERT_TRUE(Create(kAlice, Request("c"), &job).ok());
  v1::DeleteJobRequest del;
  del.set_id(job.id());
  v1::DeleteJobResponse dr;
  EXPECT_EQ(coordinator_->api().DeleteJob(Ctx(kAlice).get(), del, &dr).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);  // still queued
  v1::CancelJobRequest cancel;
  cancel.set_id(job.id());
  ASSERT_TRUE(coordinator_->api().CancelJob(Ctx(kAlice).get(), cancel, &out).ok());
  EXPECT_EQ(out.state(), v1::JOB_CANCELLED);
  EXPECT_EQ(coordinator_->api().CancelJob(Ctx(kAlice).get(), cancel, &out).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  v1::GetJobReportRequest rr;
  rr.set_id(job.id());
  v1::JobReport report;
  ASSERT_TRUE(coordinator_->api().GetJobReport(Ctx(kAlice).get(), rr, &report).ok());
  EXPECT_NE(report.report_json().find("JOB_CANCELLED"), std::string::npos);
  ASSERT_TRUE(coordinator_->api().DeleteJob(Ctx(kAlice).get(), del, &dr).ok());
  v1::GetJobRequest get;
  get.set_id(job.id());
  EXPECT_EQ(coordinator_->api().GetJob(Ctx(kAlice).get(), get, &out).error_code(), grpc::StatusCode::NOT_FOUND);
}

// A watcher sees the current job, then every event; one that reconnects
// with its last sequence number gets exactly the events after it.
TEST_F(CoordinatorTest, WatchStreamsEventsAndResumes) {
  v1::Job job;
  ASSERT_TRUE(Create(kAlice, Request("w"), &job).ok());
  std::vector<v1::WatchJobResponse> got;
  std::thread watcher([&] {
    v1::WatchJobRequest req;
    req.set_id(job.id());
    auto ctx = Ctx(kAlice);
    auto reader = coordinator_->api().WatchJob(ctx.get(), req);
    v1::WatchJobResponse r;
    while (reader->Read(&r)) got.push_back(r);
    EXPECT_TRUE(reader->Finish().ok());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  v1::CancelJobRequest cancel;
  cancel.set_id(job.id());
  v1::Job out;
  ASSERT_TRUE(coordinator_->api().CancelJob(Ctx(kAlice).get(), cancel, &out).ok());
  watcher.join();  // the stream ends once the job has finished
  ASSERT_EQ(got.size(), 3u);
  EXPECT_TRUE(got[0].has_job());
  EXPECT_EQ(got[1].event().seq(), 1);
  EXPECT_EQ(got[1].event().job_state(), v1::JOB_QUEUED);
  EXPECT_EQ(got[2].event().seq(), 2);
  EXPECT_EQ(got[2].event().job_state(), v1::JOB_CANCELLED);

  v1::WatchJobRequest resume;
  resume.set_id(job.id());
  resume.set_from_seq(1);
  auto ctx = Ctx(kAlice);
  auto reader = coordinator_->api().WatchJob(ctx.get(), resume);
  std::vector<v1::WatchJobResponse> again;
  v1::WatchJobResponse r;
  while (reader->Read(&r)) again.push_back(r);
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0].job().state(), v1::JOB_CANCELLED);
  EXPECT_EQ(again[1].event().seq(), 2);
}

TEST_F(CoordinatorTest, TokensAndOwnership) {
  v1::Job job, out;
  EXPECT_EQ(Create(nullptr, Request("a"), &job).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Create("wrong-token-0123456789", Request("a"), &job).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Create(kWorker, Request("a"), &job).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(Create(kAlice, Request("mine"), &job).ok());
  EXPECT_EQ(job.owner(), "alice");
  v1::GetJobRequest get;
  get.set_id(job.id());
  EXPECT_EQ(coordinator_->api().GetJob(Ctx(kBob).get(), get, &out).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::CancelJobRequest cancel;
  cancel.set_id(job.id());
  EXPECT_EQ(coordinator_->api().CancelJob(Ctx(kBob).get(), cancel, &out).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(coordinator_->api().GetJob(Ctx(kRoot).get(), get, &out).ok());
  v1::ListJobsResponse list;
  ASSERT_TRUE(coordinator_->api().ListJobs(Ctx(kBob).get(), {}, &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);
}

TEST_F(CoordinatorTest, ReflectionListsTheServices) {
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(coordinator_->channel());
  auto ctx = Ctx(nullptr);
  auto stream = stub->ServerReflectionInfo(ctx.get());
  grpc::reflection::v1alpha::ServerReflectionRequest req;
  req.set_list_services("");
  ASSERT_TRUE(stream->Write(req));
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  std::set<std::string> names;
  for (const auto& s : resp.list_services_response().service()) names.insert(s.name());
  EXPECT_TRUE(names.count("topiary.v1.JobService")) << resp.DebugString();
  EXPECT_TRUE(names.count("topiary.v1.WorkerService"));
  EXPECT_TRUE(names.count("grpc.health.v1.Health"));
  while (stream->Read(&resp)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
}

// Bytes that do not parse as the request are the client's fault: INVALID_ARGUMENT, not INTERNAL.
TEST_F(CoordinatorTest, UnparsableRequestsAreInvalidArgument) {
  grpc::GenericStub generic(coordinator_->channel());
  for (const char* method :
       {"/topiary.v1.JobService/CreateJob", "/topiary.v1.JobService/ListJobs", "/topiary.v1.WorkerService/Heartbeat"}) {
    grpc::CompletionQueue cq;
    auto ctx = Ctx(kAlice);
    grpc::Slice slice(std::string("\xff\xff\xff\xff\x0f"));
    grpc::ByteBuffer req(&slice, 1), resp;
    auto call = generic.PrepareUnaryCall(ctx.get(), method, req, &cq);
    call->StartCall();
    grpc::Status st;
    call->Finish(&resp, &st, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    ASSERT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method << ": " << st.error_message();
    EXPECT_EQ(st.error_message(), "could not parse request") << method;
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
  }
  auto health = grpc::health::v1::Health::NewStub(coordinator_->channel());
  grpc::health::v1::HealthCheckRequest hreq;
  grpc::health::v1::HealthCheckResponse hresp;
  ASSERT_TRUE(health->Check(Ctx(nullptr).get(), hreq, &hresp).ok());
  EXPECT_EQ(hresp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

// SIGTERM while 50 watch streams wait on a queued job: exit 0 within the drain time (2 s here).
TEST_F(CoordinatorTest, SigtermWithOpenWatchStreamsExitsWithinTheDrain) {
  v1::Job job;
  ASSERT_TRUE(Create(kAlice, Request("watched"), &job).ok());
  std::vector<std::thread> readers;
  std::atomic<int> open{0};
  for (int i = 0; i < 50; ++i) {
    readers.emplace_back([&, id = job.id()] {
      auto ctx = std::make_unique<grpc::ClientContext>();
      ctx->AddMetadata("authorization", std::string("Bearer ") + kAlice);
      v1::WatchJobRequest req;
      req.set_id(id);
      auto reader = coordinator_->api().WatchJob(ctx.get(), req);
      v1::WatchJobResponse r;
      if (reader->Read(&r)) ++open;
      while (reader->Read(&r)) {
      }
      (void)reader->Finish();
    });
  }
  for (int i = 0; i < 200 && open.load() < 50; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  EXPECT_EQ(open.load(), 50);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(coordinator_->Kill(SIGTERM), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(4));
  for (std::thread& t : readers) t.join();
}

TEST_F(CoordinatorTest, HealthServingAndSigtermDrainsToExitZero) {
  auto health = grpc::health::v1::Health::NewStub(coordinator_->channel());
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(Ctx(nullptr).get(), req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(coordinator_->Kill(SIGTERM), 0);
}

// kill -9 while clients create and cancel jobs, then a power cut (every file
// of the store cut back to what had been fsync'd: testing/power_cut.h).
// kill -9 alone would lose nothing even without a sync, since the kernel
// keeps what was written; the cut is what tells a synced write from one that
// was not. After a restart on the same directory, every acknowledged job is
// there with every acknowledged event.
struct PowerCutOutcome {
  size_t acked = 0, lost = 0;
  testing::PowerCutResult cut;
};

PowerCutOutcome KillNineAndCutPower(const std::string& dir, std::unique_ptr<Coordinator>& coordinator,
                                    std::vector<std::string> flags,
                                    const std::function<std::unique_ptr<grpc::ClientContext>()>& ctx,
                                    const std::function<v1::CreateJobRequest(const std::string&)>& request) {
  PowerCutOutcome out;
  // The fixture's coordinator ran without the journal: stop it, make what it
  // wrote durable, and start one that journals its syncs.
  EXPECT_EQ(coordinator->Kill(SIGTERM), 0);
  const auto baseline = testing::DurableBaseline(dir + "/state");
  const std::string journal = dir + "/sync.journal";
  setenv("LD_PRELOAD", (BinDir() + "/libsync_journal.so").c_str(), 1);
  setenv("TOPIARY_SYNC_JOURNAL", journal.c_str(), 1);
  coordinator = std::make_unique<Coordinator>(dir, flags);
  coordinator->Start();
  unsetenv("LD_PRELOAD");
  unsetenv("TOPIARY_SYNC_JOURNAL");

  std::mutex mu;
  std::map<std::string, int64_t> acked;  // job id -> last acknowledged event seq
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; !stop; ++i) {
        v1::Job job;
        if (!coordinator->api().CreateJob(ctx().get(), request("k" + std::to_string(c)), &job).ok()) break;
        {
          std::lock_guard<std::mutex> lock(mu);
          acked[job.id()] = 1;
        }
        if (i % 2 == 0) {
          v1::CancelJobRequest cancel;
          cancel.set_id(job.id());
          v1::Job cancelled;
          if (!coordinator->api().CancelJob(ctx().get(), cancel, &cancelled).ok()) break;
          std::lock_guard<std::mutex> lock(mu);
          acked[job.id()] = cancelled.last_event_seq();
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(coordinator->Kill(SIGKILL), -SIGKILL);
  stop = true;
  for (auto& t : clients) t.join();
  out.acked = acked.size();
  out.cut = testing::PowerCut(dir + "/state", journal, baseline);
  std::printf("power cut: %zu jobs acknowledged; %d files cut, %lld bytes dropped\n", acked.size(), out.cut.files_cut,
              static_cast<long long>(out.cut.bytes_dropped));
  coordinator = std::make_unique<Coordinator>(dir, flags);
  coordinator->Start();
  for (const auto& [id, seq] : acked) {
    v1::GetJobRequest get;
    get.set_id(id);
    v1::Job job;
    if (!coordinator->api().GetJob(ctx().get(), get, &job).ok() || job.last_event_seq() < seq) {
      ++out.lost;
      continue;
    }
    if (seq == 2) {
      EXPECT_EQ(job.state(), v1::JOB_CANCELLED) << id;
    }
  }
  if (out.lost == 0 && !acked.empty()) {  // the restarted coordinator keeps issuing later ids
    v1::Job fresh;
    EXPECT_TRUE(coordinator->api().CreateJob(ctx().get(), request("after"), &fresh).ok());
    EXPECT_GT(fresh.id(), acked.rbegin()->first);
  }
  return out;
}

TEST_F(CoordinatorTest, KillNineAndAPowerCutLoseNothingAcknowledged) {
  PowerCutOutcome o = KillNineAndCutPower(
      dir_, coordinator_, {}, [&] { return Ctx(kAlice); }, [&](const std::string& n) { return Request(n); });
  EXPECT_GT(o.acked, 10u);
  EXPECT_EQ(o.lost, 0u) << "of " << o.acked << " acknowledged jobs";
}

// The same with --sync false loses acknowledged jobs: the cut is real, and
// the test above would notice a store that stopped syncing.
TEST_F(CoordinatorTest, WithoutSyncAPowerCutLosesAcknowledgedJobs) {
  PowerCutOutcome o = KillNineAndCutPower(
      dir_, coordinator_, {"--sync", "false"}, [&] { return Ctx(kAlice); },
      [&](const std::string& n) { return Request(n); });
  EXPECT_GT(o.acked, 10u);
  EXPECT_GT(o.lost, 0u) << "of " << o.acked << " acknowledged jobs, after dropping " << o.cut.bytes_dropped
                        << " unsynced bytes";
}

TEST_F(CoordinatorTest, MetricsCountJobsAndRequestsAndPassPromtool) {
  v1::Job job;
  ASSERT_TRUE(Create(kAlice, Request("m"), &job).ok());
  v1::CreateJobRequest bad = Request("");
  EXPECT_EQ(Create(kAlice, bad, &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  std::string text = testing::ScrapeMetrics(coordinator_->metrics_port());
  // No worker has registered: once the scheduler has looked, the job waits for one.
  for (int i = 0; i < 100 && text.find("topiary_queue_waiting{reason=\"no_worker\"} 1") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    text = testing::ScrapeMetrics(coordinator_->metrics_port());
  }
  EXPECT_NE(text.find("topiary_queue_waiting{reason=\"no_worker\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("topiary_queue_waiting{reason=\"slots\"} 0"), std::string::npos) << text;
  EXPECT_NE(text.find("topiary_jobs{state=\"queued\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("topiary_jobs{state=\"cancelled\"} 0"), std::string::npos);
  EXPECT_NE(text.find("topiary_queue_depth 1"), std::string::npos);
  EXPECT_NE(text.find("topiary_job_submissions_total 1"), std::string::npos);
  EXPECT_NE(text.find("topiary_grpc_requests_total{code=\"INVALID_ARGUMENT\",method=\"CreateJob\"} 1"),
            std::string::npos);
  const size_t writes = text.find("topiary_store_write_seconds_count ");
  ASSERT_NE(writes, std::string::npos);
  EXPECT_GE(std::atoi(text.c_str() + writes + 34), 1);  // the job, and the scheduler's waiting reason
  std::ofstream(dir_ + "/scrape.txt") << text;
  auto r = testing::RunProcesses({{"/bin/sh", "-c", "promtool check metrics < " + dir_ + "/scrape.txt"}}, dir_,
                                 std::chrono::seconds(60));
  EXPECT_EQ(r[0].exit_code, 0) << r[0].output;
}

// Backups: checkpoints written while serving (--backup-dir, the newest
// --backup-keep kept), one restored into a new state directory holds every
// job acknowledged before it; an offline --backup-to refuses a store in use;
// a restore refuses a non-empty state directory.
TEST_F(CoordinatorTest, BackupsWhileServingRestoreEveryAcknowledgedJob) {
  const std::string backups = dir_ + "/backups";
  coordinator_->Kill(SIGTERM);
  coordinator_ = std::make_unique<Coordinator>(
      dir_, std::vector<std::string>{"--backup-dir", backups, "--backup-every", "1s", "--backup-keep", "2"});
  coordinator_->Start();
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    v1::Job job;
    ASSERT_TRUE(Create(kAlice, Request("b" + std::to_string(i)), &job).ok());
    ids.push_back(job.id());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));  // backups after the creates; older ones pruned
  const std::vector<std::string> kept = server::ListBackups(backups);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_NE(testing::ScrapeMetrics(coordinator_->metrics_port()).find("topiary_backup_last_success_timestamp_seconds "),
            std::string::npos);
  auto coordinator = [&](std::vector<std::string> args) {
    args.insert(args.begin(), BinDir() + "/topiary-coordinator");
    return testing::RunProcesses({args}, dir_, std::chrono::seconds(60))[0];
  };
  // The store is in use: an offline backup says what to do instead.
  auto busy = coordinator({"--state-dir", dir_ + "/state", "--backup-to", dir_ + "/offline"});
  EXPECT_EQ(busy.exit_code, 1);
  EXPECT_NE(busy.output.find("--backup-dir"), std::string::npos) << busy.output;
  EXPECT_EQ(coordinator_->Kill(SIGKILL), -SIGKILL);

  // The newest backup, restored where the store was, serves every job.
  std::filesystem::rename(dir_ + "/state", dir_ + "/state.lost");
  auto restored = coordinator({"--state-dir", dir_ + "/state", "--restore-from", kept.back()});
  ASSERT_EQ(restored.exit_code, 0) << restored.output;
  EXPECT_NE(restored.output.find("restored 5 jobs"), std::string::npos) << restored.output;
  auto again = coordinator({"--state-dir", dir_ + "/state", "--restore-from", kept.back()});
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.output.find("is not empty"), std::string::npos) << again.output;
  auto not_backup = coordinator({"--state-dir", dir_ + "/fresh", "--restore-from", dir_ + "/root"});
  EXPECT_EQ(not_backup.exit_code, 2);
  EXPECT_NE(not_backup.output.find("is not a backup"), std::string::npos) << not_backup.output;
  coordinator_ = std::make_unique<Coordinator>(dir_);
  coordinator_->Start();
  for (const std::string& id : ids) {
    v1::GetJobRequest get;
    get.set_id(id);
    v1::Job job;
    EXPECT_TRUE(coordinator_->api().GetJob(Ctx(kAlice).get(), get, &job).ok()) << id << " lost";
  }
  // Offline, once the coordinator has stopped.
  EXPECT_EQ(coordinator_->Kill(SIGTERM), 0);
  auto offline = coordinator({"--state-dir", dir_ + "/state", "--backup-to", dir_ + "/offline"});
  EXPECT_EQ(offline.exit_code, 0) << offline.output;
  auto from_offline = coordinator({"--state-dir", dir_ + "/state2", "--restore-from", dir_ + "/offline"});
  EXPECT_EQ(from_offline.exit_code, 0) << from_offline.output;
  EXPECT_NE(from_offline.output.find("restored 5 jobs"), std::string::npos) << from_offline.output;
}

// The `topiary` API commands against the real coordinator: exit codes, one
// line on errors, table and JSON output, watch ending with the job's outcome.
TEST_F(CoordinatorTest, CliSubmitGetListWatchCancelReportDelete) {
  const std::string server = "127.0.0.1:" + std::to_string(coordinator_->port());
  auto topiary = [&](std::vector<std::string> args, const char* token = kAlice) {
    args.insert(args.begin(), BinDir() + "/topiary");
    args.push_back("--server");
    args.push_back(server);
    if (token != nullptr) args.push_back("--token"), args.push_back(token);
    return testing::RunProcesses({args}, dir_, std::chrono::seconds(60))[0];
  };
  std::ofstream(dir_ + "/spec.yaml") << "name: cli\nteacher: {path: " << dir_ << "/root/models/t}\n"
                                     << "data: {eval: {path: " << dir_ << "/root/val.bin}}\n"
                                     << "stages:\n  - evaluate: {perplexity: true}\nlabels: {team: nlp}\n";
  auto submit = topiary({"submit", dir_ + "/spec.yaml"});
  ASSERT_EQ(submit.exit_code, 0) << submit.output;
  const std::string id(absl::StripAsciiWhitespace(submit.output));
  ASSERT_EQ(id.rfind("job-", 0), 0u) << submit.output;
  auto get = topiary({"get", id, "--output", "json"});
  EXPECT_EQ(get.exit_code, 0);
  EXPECT_NE(get.output.find("\"state\": \"JOB_QUEUED\""), std::string::npos) << get.output;
  auto list = topiary({"list", "--label", "team=nlp"});
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_NE(list.output.find(id), std::string::npos);
  EXPECT_NE(list.output.find("QUEUED"), std::string::npos);
  auto yaml = topiary({"list", "-o", "yaml"});
  EXPECT_NE(yaml.output.find("state: JOB_QUEUED"), std::string::npos) << yaml.output;

  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto cancel = topiary({"cancel", id});
    EXPECT_EQ(cancel.exit_code, 0) << cancel.output;
  });
  auto watch = topiary({"watch", id});
  canceller.join();
  EXPECT_EQ(watch.exit_code, 6) << watch.output;  // cancelled
  EXPECT_NE(watch.output.find("#2 job CANCELLED"), std::string::npos) << watch.output;
  auto report = topiary({"report", id});
  EXPECT_EQ(report.exit_code, 0);
  EXPECT_NE(report.output.find("JOB_CANCELLED"), std::string::npos);
  EXPECT_EQ(topiary({"delete", id}).exit_code, 0);

  auto missing = topiary({"get", id});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_EQ(std::count(missing.output.begin(), missing.output.end(), '\n'), 1) << missing.output;
  EXPECT_EQ(topiary({"get", id}, "bad-token-0123456789abc").exit_code, 4);
  std::ofstream(dir_ + "/bad.yaml") << "name: cli\nteacher: {path: /etc}\nstages:\n  - evaluate: {}\n";
  auto bad = topiary({"submit", dir_ + "/bad.yaml"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("spec.teacher.path"), std::string::npos) << bad.output;
  std::ofstream(dir_ + "/typo.yaml") << "name: cli\nstagez: []\n";
  EXPECT_NE(topiary({"submit", dir_ + "/typo.yaml"}).output.find("spec.stagez: unknown field"), std::string::npos);
  coordinator_->Kill(SIGKILL);
  auto down = topiary({"list", "--timeout", "2"});
  EXPECT_EQ(down.exit_code, 3) << down.output;
}

// Mutual TLS: certificates made with openssl for this test; a client with
// the CA and its own certificate gets in, one without a certificate or
// without TLS does not.
TEST(CoordinatorTls, MutualTlsAdmitsOnlyClientsWithACertificate) {
  const std::string dir = *MakeTempDir("topiary-tls");
  std::filesystem::create_directories(dir + "/root");
  std::ofstream(dir + "/tokens") << kAlice << " alice user\n";
  const std::string script =
      "set -e; cd " + dir +
      "; "
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=topiary-test-ca "
      "2>/dev/null; "
      "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost' > san.ext; "
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null; "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
      "-extfile san.ext 2>/dev/null; "
      "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=client 2>/dev/null; "
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 "
      "2>/dev/null";
  auto made = testing::RunProcesses({{"/bin/sh", "-c", script}}, dir, std::chrono::seconds(60));
  ASSERT_EQ(made[0].exit_code, 0) << made[0].output;
  Coordinator c(
      dir, {"--tls-cert", dir + "/server.pem", "--tls-key", dir + "/server.key", "--tls-client-ca", dir + "/ca.pem"});
  c.Start(/*connect=*/false);
  const std::string target = "127.0.0.1:" + std::to_string(c.port());
  auto call = [&](std::shared_ptr<grpc::ChannelCredentials> creds) {
    auto stub = v1::JobService::NewStub(grpc::CreateChannel(target, creds));
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Bearer ") + kAlice);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ListJobsResponse resp;
    return stub->ListJobs(&ctx, {}, &resp).error_code();
  };
  grpc::SslCredentialsOptions full;
  full.pem_root_certs = *ReadFileToString(dir + "/ca.pem", 1 << 20);
  full.pem_cert_chain = *ReadFileToString(dir + "/client.pem", 1 << 20);
  full.pem_private_key = *ReadFileToString(dir + "/client.key", 1 << 20);
  EXPECT_EQ(call(grpc::SslCredentials(full)), grpc::StatusCode::OK);
  grpc::SslCredentialsOptions no_cert;
  no_cert.pem_root_certs = full.pem_root_certs;
  EXPECT_EQ(call(grpc::SslCredentials(no_cert)), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(call(grpc::InsecureChannelCredentials()), grpc::StatusCode::UNAVAILABLE);
  // The CLI speaks TLS too.
  auto cli =
      testing::RunProcesses({{BinDir() + "/topiary", "list", "--server", target, "--token", kAlice, "--tls-ca",
                              dir + "/ca.pem", "--tls-cert", dir + "/client.pem", "--tls-key", dir + "/client.key"}},
                            dir, std::chrono::seconds(60));
  EXPECT_EQ(cli[0].exit_code, 0) << cli[0].output;
  c.Kill(SIGKILL);
  RemoveAll(dir).IgnoreError();
}

// A disk that fills up: the write that fails answers UNAVAILABLE, health
// flips to NOT_SERVING, nothing acknowledged is lost, and the coordinator
// serves again once the disk has room.
TEST(CoordinatorDisk, AFailingDiskFlipsHealthAndLosesNothingAcknowledged) {
  const std::string dir = *MakeTempDir("topiary-coord-disk");
  std::filesystem::create_directories(dir + "/root/models/t");
  std::ofstream(dir + "/tokens") << kAlice << " alice user\n";
  const std::string flag = dir + "/disk-full";
  setenv("LD_PRELOAD", (BinDir() + "/libfailing_fs.so").c_str(), 1);
  setenv("TOPIARY_FAILING_FS_FLAG", flag.c_str(), 1);
  setenv("TOPIARY_FAILING_FS_DIR", (dir + "/state").c_str(), 1);
  Coordinator c(dir, {"--health-listen", "127.0.0.1:0"});  // and the probes' plaintext health port
  c.Start();
  unsetenv("LD_PRELOAD");
  ASSERT_GT(c.health_port(), 0);
  auto ctx = [] {
    auto x = std::make_unique<grpc::ClientContext>();
    x->AddMetadata("authorization", std::string("Bearer ") + kAlice);
    x->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return x;
  };
  auto request = [&](const std::string& name) {
    v1::CreateJobRequest r;
    r.mutable_spec()->set_name(name);
    r.mutable_spec()->mutable_teacher()->set_path(dir + "/root/models/t");
    r.mutable_spec()->add_stages()->mutable_evaluate();
    r.mutable_spec()->mutable_data()->mutable_eval()->set_path(dir + "/root/val.bin");
    return r;
  };
  auto health = grpc::health::v1::Health::NewStub(c.channel());
  auto probe = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(c.health_port()), grpc::InsecureChannelCredentials()));
  auto serving_on = [](grpc::health::v1::Health::Stub& stub, const std::string& service = "") {
    grpc::ClientContext hctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    return stub.Check(&hctx, req, &resp).ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  };
  // Both ports say the same; a disagreement reads as neither serving nor not.
  auto serving = [&] { return serving_on(*health) && serving_on(*probe); };
  auto not_serving = [&] { return !serving_on(*health) && !serving_on(*probe); };
  std::set<std::string> acknowledged;
  v1::Job job;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(c.api().CreateJob(ctx().get(), request("before"), &job).ok());
    acknowledged.insert(job.id());
  }
  EXPECT_TRUE(serving());
  std::ofstream(flag) << "full\n";  // the disk is full from now on
  grpc::Status st = c.api().CreateJob(ctx().get(), request("during"), &job);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  for (int i = 0; i < 100 && !not_serving(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(not_serving());
  EXPECT_TRUE(serving_on(*probe, "liveness"));  // unready, but not to be restarted
  EXPECT_EQ(c.api().CreateJob(ctx().get(), request("during"), &job).error_code(), grpc::StatusCode::UNAVAILABLE);
  v1::GetJobRequest get;
  get.set_id(*acknowledged.begin());
  EXPECT_TRUE(c.api().GetJob(ctx().get(), get, &job).ok());  // reads still work
  std::filesystem::remove(flag);                             // room again
  for (int i = 0; i < 200 && !serving(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(serving());
  ASSERT_TRUE(c.api().CreateJob(ctx().get(), request("after"), &job).ok());
  acknowledged.insert(job.id());
  EXPECT_EQ(c.Kill(SIGKILL), -SIGKILL);  // and nothing acknowledged is lost
  c.Start();
  v1::ListJobsResponse list;
  v1::ListJobsRequest lr;
  ASSERT_TRUE(c.api().ListJobs(ctx().get(), lr, &list).ok());
  std::set<std::string> stored;
  for (const v1::Job& j : list.jobs()) stored.insert(j.id());
  for (const std::string& id : acknowledged) EXPECT_TRUE(stored.count(id)) << id;
  unsetenv("TOPIARY_FAILING_FS_FLAG");
  unsetenv("TOPIARY_FAILING_FS_DIR");
  c.Kill(SIGKILL);
  RemoveAll(dir).IgnoreError();
}

TEST(CoordinatorFlags, UnsafeOrHalfGivenSecurityFlagsExitTwo) {
  std::string dir = *MakeTempDir("topiary-coord-flags");
  std::ofstream(dir + "/pem") << "x";
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {BinDir() + "/topiary-coordinator", "--state-dir", dir + "/s"});
    return testing::RunProcesses({args}, dir, std::chrono::seconds(30))[0];
  };
  auto r = run({"--listen", "0.0.0.0:0"});  // no tokens on a non-loopback address
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--allow-anonymous"), std::string::npos) << r.output;
  r = run({"--listen", "127.0.0.1:0", "--tls-client-ca", dir + "/pem"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--tls-client-ca needs --tls-cert"), std::string::npos) << r.output;
  r = run({"--listen", "127.0.0.1:0", "--tls-cert", dir + "/pem"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--tls-cert and --tls-key go together"), std::string::npos) << r.output;
  RemoveAll(dir).IgnoreError();
}

TEST(CoordinatorFlags, BadTokensFileExitsTwoWithOneLine) {
  std::string dir = *MakeTempDir("topiary-coord-flags");
  std::ofstream(dir + "/tokens") << "short alice user\n";
  auto r = testing::RunProcesses({{BinDir() + "/topiary-coordinator", "--state-dir", dir + "/s", "--tokens",
                                   dir + "/tokens", "--listen", "127.0.0.1:0"}},
                                 dir, std::chrono::seconds(30));
  EXPECT_EQ(r[0].exit_code, 2);
  EXPECT_NE(r[0].output.find("tokens:1: token shorter than 16 characters"), std::string::npos) << r[0].output;
  RemoveAll(dir).IgnoreError();
}

// A port that is taken, found after the store is open and the background
// threads run: exit 1 naming the flag, not an abort.
TEST(CoordinatorFlags, ABusyPortExitsOneNamingTheFlag) {
  std::string dir = *MakeTempDir("topiary-coord-flags");
  const int busy = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(busy, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(busy, 1), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(busy, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string taken = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  for (const char* flag : {"--health-listen", "--metrics-address"}) {
    std::vector<std::string> args = {
        BinDir() + "/topiary-coordinator", "--state-dir", dir + "/s", "--listen", "127.0.0.1:0", flag, taken};
    if (std::string(flag) != "--metrics-address") args.insert(args.end(), {"--metrics-address", "127.0.0.1:0"});
    auto r = testing::RunProcesses({args}, dir, std::chrono::seconds(30));
    EXPECT_EQ(r[0].exit_code, 1) << flag << ": " << r[0].output;
    EXPECT_NE(r[0].output.find(flag), std::string::npos) << r[0].output;
  }
  close(busy);
  RemoveAll(dir).IgnoreError();
}

}  // namespace
}  // namespace topiary
