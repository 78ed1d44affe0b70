// The coordinator under load, measured in one run:
//  1. CreateJob and GetJob over gRPC against a real topiary-coordinator
//     (--sync true) with 1, 16 and 64 concurrent clients: p50, p99 and
//     throughput; CreateJob's p50 over a bare 4 KiB write + fsync measured in
//     the same directory (every acknowledged job is synced: that is the floor).
//  2. Scheduling: 1,000 queued one-rank jobs over 100 registered workers of 4
//     slots (400 fit), the scheduler in process over RocksDB with sync on;
//     the p50 and p99 of one placement decision (target p99 <= 10 ms).
//
//   coordinator_bench [--requests N]      (per client count; default 3000: fewer
//                                         measure the clients' ramp-up, not steady state)
//   coordinator_bench --fleet 250,500,1000[,...] [--seconds S] [--threads T]
//                                         (bench/fleet.h: a simulated fleet)
// Prints one SUMMARY line.
#include <fcntl.h>
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
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/fleet.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "server/jobs/job_manager.h"
#include "server/scheduler/scheduler.h"
#include "server/store/store.h"
#include "topiary/v1/job_service.grpc.pb.h"

extern char** environ;

namespace {

using namespace topiary;
using Clock_ = std::chrono::steady_clock;

std::string SelfDir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  buf[n > 0 ? n : 0] = 0;
  return std::filesystem::path(buf).parent_path().string();
}

double FsyncSeconds(const std::string& dir) {
  std::vector<double> t;
  std::string block(4096, 'x');
  for (int i = 0; i < 50; ++i) {
    const std::string path = dir + "/fsync-probe";
    auto t0 = Clock_::now();
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (write(fd, block.data(), block.size()) < 0) return -1;
    fsync(fd);
    close(fd);
    t.push_back(std::chrono::duration<double>(Clock_::now() - t0).count());
  }
  return bench::Percentile(t, 0.5);
}

v1::JobSpec Spec(const std::string& root) {
  v1::JobSpec s;
  s.set_name("bench");
  s.mutable_teacher()->set_path(root + "/models/t");
  s.add_stages()->mutable_evaluate()->set_perplexity(true);
  s.mutable_data()->mutable_eval()->set_path(root + "/data/val.bin");
  return s;
}

struct Load {
  double p50 = 0, p99 = 0, per_second = 0;
};

// `clients` threads each issuing `per_client` calls of `call`.
Load Run(int clients, int per_client, const std::function<bool(int, int)>& call) {
  std::vector<std::vector<double>> lat(clients);
  std::atomic<bool> failed{false};
  auto t0 = Clock_::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (int i = 0; i < per_client; ++i) {
        auto s = Clock_::now();
        if (!call(c, i)) failed = true;
        lat[c].push_back(std::chrono::duration<double>(Clock_::now() - s).count());
      }
    });
  }
  for (auto& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock_::now() - t0).count();
  if (failed) std::fprintf(stderr, "coordinator_bench: some calls failed\n");
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  return {bench::Percentile(all, 0.5), bench::Percentile(all, 0.99), static_cast<double>(all.size()) / wall};
}

}  // namespace

int main(int argc, char** argv) {
  int requests = 3000;
  bench::FleetOptions fleet;
  fleet.coordinator = SelfDir() + "/topiary-coordinator";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--requests")
      requests = std::atoi(v.c_str());
    else if (k == "--seconds")
      fleet.seconds = std::atof(v.c_str());
    else if (k == "--threads")
      fleet.threads = std::atoi(v.c_str());
    else if (k == "--fleet") {
      for (absl::string_view n : absl::StrSplit(v, ',', absl::SkipEmpty())) {
        int workers = 0;
        if (absl::SimpleAtoi(n, &workers) && workers > 0) fleet.sizes.push_back(workers);
      }
    }
  }
  if (!fleet.sizes.empty()) return bench::RunFleet(fleet);
  const std::string dir = *MakeTempDir("topiary-coord-bench");
  std::filesystem::create_directories(dir + "/root/models/t");
  const double fsync_s = FsyncSeconds(dir);

  // ---- 1. the API over gRPC -------------------------------------------------
  const bench::Coordinator coordinator = bench::StartCoordinator(SelfDir() + "/topiary-coordinator", dir);
  if (coordinator.address.empty()) {
    std::fprintf(stderr, "coordinator_bench: the coordinator did not start\n");
    return 1;
  }
  auto channel = grpc::CreateChannel(coordinator.address, grpc::InsecureChannelCredentials());
  auto stub = v1::JobService::NewStub(channel);
  std::vector<std::string> ids;
  std::mutex ids_mu;
  std::string line;
  double create1_p50 = 0;
  for (int clients : {1, 16, 64}) {
    const int per = std::max(1, requests / clients);
    Load create = Run(clients, per, [&](int c, int i) {
      grpc::ClientContext ctx;
      v1::CreateJobRequest r;
      *r.mutable_spec() = Spec(dir + "/root");
      v1::Job job;
      if (!stub->CreateJob(&ctx, r, &job).ok()) return false;
      std::lock_guard<std::mutex> lock(ids_mu);
      ids.push_back(job.id());
      return true;
    });
    Load get = Run(clients, per, [&](int c, int i) {
      grpc::ClientContext ctx;
      v1::GetJobRequest r;
      r.set_id(ids[(c * 7919 + i) % ids.size()]);
      v1::Job job;
      return stub->GetJob(&ctx, r, &job).ok();
    });
    if (clients == 1) create1_p50 = create.p50;
    line += absl::StrFormat(
        " c%d_create_p50_ms=%.2f c%d_create_p99_ms=%.2f c%d_create_per_s=%.0f c%d_get_p50_ms=%.2f "
        "c%d_get_p99_ms=%.2f c%d_get_per_s=%.0f",
        clients, create.p50 * 1e3, clients, create.p99 * 1e3, clients, create.per_second, clients, get.p50 * 1e3,
        clients, get.p99 * 1e3, clients, get.per_second);
  }
  kill(coordinator.pid, SIGTERM);
  waitpid(coordinator.pid, nullptr, 0);

  // ---- 2. scheduling decisions ----------------------------------------------
  double sched_p50 = 0, sched_p99 = 0;
  int placed = 0;
  {
    server::RocksStoreOptions so;
    so.dir = dir + "/sched-state";
    auto store = std::move(*server::OpenRocksStore(so));
    server::JobManagerOptions jo;
    jo.storage_roots = {dir + "/root"};
    jo.max_queued = 100000;
    server::JobManager jobs(store.get(), Clock::Real(), jo);
    (void)jobs.Recover();
    server::SchedulerOptions o;
    o.lease_micros = 600'000'000;
    o.storage_root = dir + "/root";
    server::Scheduler sched(&jobs, store.get(), Clock::Real(), o);
    for (int w = 0; w < 100; ++w) {
      v1::RegisterWorkerRequest r;
      r.set_name(absl::StrFormat("w%d", w));
      r.set_slots(4);
      (void)sched.Register("bench", r);
    }
    server::Principal admin{"bench", server::Principal::Role::kAdmin};
    for (int j = 0; j < 1000; ++j) {
      auto job = jobs.Create(admin, Spec(dir + "/root"), "");
      if (job.ok()) sched.Notify(job->id());
    }
    (void)sched.TakeStats();
    sched.RunOnce();  // 400 placements and 600 waiting reasons
    sched.RunOnce();  // a steady pass: nothing changes, nothing is written
    auto stats = sched.TakeStats();
    sched_p50 = bench::Percentile(stats.decision_seconds, 0.5);
    sched_p99 = bench::Percentile(stats.decision_seconds, 0.99);
    placed = stats.slots_used;
  }
  RemoveAll(dir).IgnoreError();
  std::printf(
      "SUMMARY coordinator_bench sync=true fsync_p50_ms=%.2f create_p50_over_fsync=%.2f%s "
      "sched_decisions_p50_ms=%.3f sched_p99_ms=%.3f sched_placed=%d_of_1000_over_100_workers\n",
      fsync_s * 1e3, create1_p50 / fsync_s, line.c_str(), sched_p50 * 1e3, sched_p99 * 1e3, placed);
  return 0;
}
