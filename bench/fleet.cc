#include "bench/fleet.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "topiary/v1/job_service.grpc.pb.h"
#include "topiary/v1/worker_service.grpc.pb.h"

extern char** environ;

namespace topiary::bench {
namespace {

using Clock_ = std::chrono::steady_clock;
constexpr int kSlots = 8;
constexpr auto kHeartbeatEvery = std::chrono::seconds(3);
constexpr auto kProgressEvery = std::chrono::seconds(10);

// CPU seconds (user + system) and bytes written to storage by a process so far.
std::pair<double, double> CpuAndWrites(pid_t pid) {
  double cpu = 0, written = 0;
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');
  if (close != std::string::npos) {
    std::istringstream rest(text.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14 || i == 15) cpu += std::stod(field) / static_cast<double>(sysconf(_SC_CLK_TCK));
    }
  }
  std::ifstream io(absl::StrCat("/proc/", pid, "/io"));
  std::string key;
  double value = 0;
  while (io >> key >> value) {
    if (key == "write_bytes:") written = value;
  }
  return {cpu, written};
}

v1::JobSpec Spec(const std::string& root) {
  v1::JobSpec s;
  s.set_name("fleet");
  s.mutable_teacher()->set_path(root + "/models/t");
  s.add_stages()->mutable_importance();  // a multi-rank stage: its task is a gang of kSlots ranks
  s.mutable_data()->mutable_calibration()->set_path(root + "/data/cal.bin");
  s.mutable_resources()->set_ranks(kSlots);
  s.mutable_resources()->set_slots_per_rank(1);
  return s;
}

struct Rank {
  v1::RankRef ref;
  Clock_::time_point next_progress;
  int64_t step = 0;
};

struct SimWorker {
  std::string id, secret;
  std::vector<Rank> ranks;
  Clock_::time_point next_heartbeat;
};

struct Latencies {
  std::vector<double> heartbeat, poll, progress, list;
  int64_t leases_lost = 0, errors = 0;
  void Merge(const Latencies& o) {
    heartbeat.insert(heartbeat.end(), o.heartbeat.begin(), o.heartbeat.end());
    poll.insert(poll.end(), o.poll.begin(), o.poll.end());
    progress.insert(progress.end(), o.progress.begin(), o.progress.end());
    list.insert(list.end(), o.list.begin(), o.list.end());
    leases_lost += o.leases_lost, errors += o.errors;
  }
  void Clear() { *this = Latencies(); }
};

double Since(Clock_::time_point t) { return std::chrono::duration<double>(Clock_::now() - t).count(); }

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  return c;
}

// One client thread driving its share of the fleet until `stop`.
void Drive(v1::WorkerService::Stub* stub, std::vector<SimWorker*> workers, const std::atomic<bool>& stop,
           std::mutex* mu, Latencies* out, std::atomic<int64_t>* placed_ranks) {
  Latencies mine;
  while (!stop) {
    Clock_::time_point next = Clock_::now() + std::chrono::milliseconds(50);
    for (SimWorker* w : workers) {
      if (Clock_::now() >= w->next_heartbeat) {
        w->next_heartbeat += kHeartbeatEvery;
        v1::HeartbeatRequest hb;
        hb.set_worker_id(w->id);
        hb.set_secret(w->secret);
        for (const Rank& r : w->ranks) *hb.add_running() = r.ref;
        v1::HeartbeatResponse hr;
        auto t = Clock_::now();
        grpc::Status st = stub->Heartbeat(Ctx().get(), hb, &hr);
        mine.heartbeat.push_back(Since(t));
        if (!st.ok() || hr.stop_size() > 0) ++mine.leases_lost;
        v1::PollAssignmentsRequest pr;
        pr.set_worker_id(w->id);
        pr.set_secret(w->secret);
        pr.set_wait_micros(0);
        v1::PollAssignmentsResponse pa;
        t = Clock_::now();
        st = stub->PollAssignments(Ctx().get(), pr, &pa);
        mine.poll.push_back(Since(t));
        if (!st.ok()) ++mine.errors;
        for (const v1::Assignment& a : pa.assignments()) {
          const bool known = std::any_of(w->ranks.begin(), w->ranks.end(), [&](const Rank& r) {
            return r.ref.task_id() == a.task_id() && r.ref.rank() == a.rank();
          });
          if (known) continue;
          Rank r;
          r.ref.set_task_id(a.task_id());
          r.ref.set_rank(a.rank());
          r.ref.set_attempt(a.attempt());
          // Spread the ranks' reports over the period.
          const size_t offset_ms =
              (std::hash<std::string>()(a.task_id()) + static_cast<size_t>(a.rank()) * 1250) % 10000;
          r.next_progress = Clock_::now() + std::chrono::milliseconds(offset_ms);
          w->ranks.push_back(r);
          placed_ranks->fetch_add(1);
        }
      }
      next = std::min(next, w->next_heartbeat);
      for (Rank& r : w->ranks) {
        if (Clock_::now() >= r.next_progress) {
          r.next_progress += kProgressEvery;
          v1::ReportProgressRequest req;
          req.set_worker_id(w->id);
          req.set_secret(w->secret);
          req.set_task_id(r.ref.task_id());
          req.set_rank(r.ref.rank());
          req.set_attempt(r.ref.attempt());
          v1::Progress* p = req.mutable_progress();
          p->set_step(++r.step);
          p->set_total_steps(1000000);
          p->set_tokens(r.step * 65536);
          p->set_loss(3.0);
          p->set_tokens_per_second(6553.6);
          p->set_phase("training");
          (*req.mutable_metrics())["loss"] = 3.0;
          v1::ReportProgressResponse resp;
          auto t = Clock_::now();
          grpc::Status st = stub->ReportProgress(Ctx().get(), req, &resp);
          mine.progress.push_back(Since(t));
          if (!st.ok()) ++mine.errors;
        }
        next = std::min(next, r.next_progress);
      }
    }
    std::this_thread::sleep_until(std::max(next, Clock_::now() + std::chrono::milliseconds(1)));
    if (Clock_::now() - next > std::chrono::seconds(1) || mine.heartbeat.size() > 256) {
      std::lock_guard<std::mutex> lock(*mu);
      out->Merge(mine);
      mine.Clear();
    }
  }
  std::lock_guard<std::mutex> lock(*mu);
  out->Merge(mine);
}

struct SizeResult {
  int workers = 0;
  bool placed = false;
  double hb_p50 = 0, hb_p99 = 0, poll_p99 = 0, progress_p50 = 0, progress_p99 = 0, list_p99 = 0;
  int64_t leases_lost = 0, errors = 0, user_creates = 0;
  double cpu_cores = 0, bytes_per_hour_per_rank = 0;
  bool Holds() const { return placed && hb_p99 <= 0.1 && progress_p99 <= 0.1 && leases_lost == 0 && errors == 0; }
};

SizeResult RunSize(const FleetOptions& o, int n) {
  SizeResult res;
  res.workers = n;
  const std::string dir = *MakeTempDir("topiary-fleet-bench");
  std::filesystem::create_directories(dir + "/root/models/t");
  Coordinator c = StartCoordinator(o.coordinator, dir, {"--max-queued-per-user", "1000000", "--lease-seconds", "30"});
  if (c.address.empty()) {
    std::fprintf(stderr, "coordinator_bench: the coordinator did not start\n");
    return res;
  }
  const int threads = std::max(1, std::min(o.threads, n));
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::WorkerService::Stub>> stubs;
  for (int t = 0; t < threads; ++t) {
    grpc::ChannelArguments args;
    args.SetInt("topiary.fleet.channel", t);  // a connection per thread, not one shared
    channels.push_back(grpc::CreateCustomChannel(c.address, grpc::InsecureChannelCredentials(), args));
    stubs.push_back(v1::WorkerService::NewStub(channels.back()));
  }
  auto jobs = v1::JobService::NewStub(channels[0]);
  // Register the fleet and queue one 8-rank job per worker, in parallel.
  std::vector<SimWorker> fleet(n);
  {
    std::vector<std::thread> ts;
    std::atomic<int> failed{0};
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        for (int i = t; i < n; i += threads) {
          v1::RegisterWorkerRequest r;
          r.set_name(absl::StrFormat("sim-%05d", i));
          r.set_slots(kSlots);
          r.set_device_kind("cpu");
          r.set_memory_bytes(int64_t{64} << 30);
          v1::RegisterWorkerResponse resp;
          if (!stubs[t]->RegisterWorker(Ctx().get(), r, &resp).ok()) ++failed;
          fleet[i].id = resp.worker_id();
          fleet[i].secret = resp.secret();
          fleet[i].next_heartbeat = Clock_::now() + std::chrono::milliseconds((i * 3000 / n) % 3000);
          v1::CreateJobRequest cr;
          *cr.mutable_spec() = Spec(dir + "/root");
          v1::Job job;
          if (!jobs->CreateJob(Ctx().get(), cr, &job).ok()) ++failed;
        }
      });
    }
    for (auto& t : ts) t.join();
    if (failed > 0) std::fprintf(stderr, "coordinator_bench: %d registrations or creates failed\n", failed.load());
  }
  std::atomic<bool> stop{false};
  std::mutex mu;
  Latencies lat;
  std::atomic<int64_t> placed{0};
  std::vector<std::thread> drivers;
  for (int t = 0; t < threads; ++t) {
    std::vector<SimWorker*> mine;
    for (int i = t; i < n; i += threads) mine.push_back(&fleet[i]);
    drivers.emplace_back(Drive, stubs[t].get(), mine, std::cref(stop), &mu, &lat, &placed);
  }
  // Warm-up: until every slot runs a rank (or two minutes).
  const auto warm_end = Clock_::now() + std::chrono::seconds(120);
  while (placed < int64_t{n} * kSlots && Clock_::now() < warm_end)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  res.placed = placed == int64_t{n} * kSlots;
  std::this_thread::sleep_for(kProgressEvery);  // every rank has reported once
  {
    std::lock_guard<std::mutex> lock(mu);
    lat.Clear();
  }
  // Users, while the fleet runs: create (queued), list and watch.
  std::atomic<bool> users_stop{false};
  std::atomic<int64_t> creates{0};
  Latencies user_lat;
  std::thread users([&] {
    while (!users_stop) {
      v1::CreateJobRequest cr;
      *cr.mutable_spec() = Spec(dir + "/root");
      v1::Job job;
      if (jobs->CreateJob(Ctx().get(), cr, &job).ok()) ++creates;
      v1::ListJobsRequest lr;
      lr.set_page_size(50);
      v1::ListJobsResponse lresp;
      auto t = Clock_::now();
      if (!jobs->ListJobs(Ctx().get(), lr, &lresp).ok()) ++user_lat.errors;
      user_lat.list.push_back(Since(t));
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  });
  grpc::ClientContext watch_ctx;
  std::thread watcher([&] {
    v1::ListJobsRequest lr;
    lr.set_page_size(1);
    v1::ListJobsResponse lresp;
    if (!jobs->ListJobs(Ctx().get(), lr, &lresp).ok() || lresp.jobs_size() == 0) return;
    v1::WatchJobRequest wr;
    wr.set_id(lresp.jobs(0).id());
    auto reader = jobs->WatchJob(&watch_ctx, wr);
    v1::WatchJobResponse ev;
    while (reader->Read(&ev)) {
    }
  });
  const auto [cpu0, bytes0] = CpuAndWrites(c.pid);
  const auto t0 = Clock_::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
  const auto [cpu1, bytes1] = CpuAndWrites(c.pid);
  const double wall = Since(t0);
  users_stop = true;
  stop = true;
  users.join();
  watch_ctx.TryCancel();
  watcher.join();
  for (auto& d : drivers) d.join();
  lat.Merge(user_lat);
  res.hb_p50 = Percentile(lat.heartbeat, 0.5), res.hb_p99 = Percentile(lat.heartbeat, 0.99),
  res.poll_p99 = Percentile(lat.poll, 0.99);
  res.progress_p50 = Percentile(lat.progress, 0.5), res.progress_p99 = Percentile(lat.progress, 0.99);
  res.list_p99 = Percentile(lat.list, 0.99);
  res.leases_lost = lat.leases_lost, res.errors = lat.errors, res.user_creates = creates;
  res.cpu_cores = (cpu1 - cpu0) / wall;
  res.bytes_per_hour_per_rank = (bytes1 - bytes0) / wall * 3600 / (static_cast<double>(n) * kSlots);
  kill(c.pid, SIGTERM);
  waitpid(c.pid, nullptr, 0);
  RemoveAll(dir).IgnoreError();
  std::fprintf(stderr,
               "fleet %d workers x %d ranks: placed %s, heartbeat p50 %.1f ms p99 %.1f ms, poll p99 %.1f ms, "
               "progress p50 %.1f ms p99 %.1f ms, list p99 %.1f ms, %lld leases lost, %lld errors, %lld user creates, "
               "coordinator %.2f cores, %.0f bytes written/hour/rank\n",
               n, kSlots, res.placed ? "all" : "NOT all", res.hb_p50 * 1e3, res.hb_p99 * 1e3, res.poll_p99 * 1e3,
               res.progress_p50 * 1e3, res.progress_p99 * 1e3, res.list_p99 * 1e3,
               static_cast<long long>(res.leases_lost), static_cast<long long>(res.errors),
               static_cast<long long>(res.user_creates), res.cpu_cores, res.bytes_per_hour_per_rank);
  return res;
}

}  // namespace

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

Coordinator StartCoordinator(const std::string& binary, const std::string& dir,
                             const std::vector<std::string>& extra_flags) {
  std::vector<std::string> args = {binary,        "--listen",          "127.0.0.1:0",
                                   "--state-dir", dir + "/state",      "--storage-root",
                                   dir + "/root", "--metrics-address", "",
                                   "--port-file", dir + "/port",       "--max-queued",
                                   "1000000",     "--log-level",       "warn"};
  args.insert(args.end(), extra_flags.begin(), extra_flags.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  Coordinator c;
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return c;
  c.pid = pid;
  for (int i = 0; i < 400 && !std::filesystem::exists(dir + "/port"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto port = ReadFileToString(dir + "/port", 64);
  if (port.ok()) c.address = "127.0.0.1:" + port->substr(0, port->find('\n'));
  return c;
}

int RunFleet(const FleetOptions& o) {
  std::string line;
  int held = 0;
  for (int n : o.sizes) {
    SizeResult r = RunSize(o, n);
    line += absl::StrFormat(
        " w%d_hb_p99_ms=%.1f w%d_progress_p99_ms=%.1f w%d_leases_lost=%lld w%d_cpu_cores=%.2f "
        "w%d_bytes_per_hour_per_rank=%.0f",
        n, r.hb_p99 * 1e3, n, r.progress_p99 * 1e3, n, static_cast<long long>(r.leases_lost), n, r.cpu_cores, n,
        r.bytes_per_hour_per_rank);
    if (!r.Holds()) break;
    held = n;
  }
  std::printf(
      "SUMMARY coordinator_bench fleet ranks_per_worker=%d heartbeat_every_s=3 progress_every_s=10 "
      "largest_fleet_held=%d%s\n",
      kSlots, held, line.c_str());
  return 0;
}

}  // namespace topiary::bench
