// topiary-rank: one rank of one task, started by the worker agent
// (worker/agent/rank_protocol.h has the protocol). It runs the assignment's
// stage with the stages library and reports progress and the outcome on
// fd 3; it stops at a step boundary when the agent says so, and dies with
// the agent. Not meant to be run by hand.
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/process.h"
#include "common/rpc/channel.h"
#include "common/status_macros.h"
#include "worker/agent/rank_protocol.h"
#include "worker/job/coordinator_rendezvous.h"
#include "worker/job/run_assignment.h"
#include "worker/model/caching_allocator.h"
#include "worker/model/errors.h"
#include "worker/stages/data.h"
#include "worker/train/trainer.h"

namespace {

using namespace topiary;

struct Flags {
  std::string assignment, coordinator, worker_id, secret_file, token_file, tls_ca, tls_cert, tls_key;
  std::string advertise_host = "127.0.0.1", device = "cpu";
  std::vector<std::string> storage_roots;
  int64_t memory_budget = -1;
  double dist_timeout = 300, stop_grace = 30;
  int threads = 0;
};

std::mutex out_mu;
FILE* out = nullptr;

void Send(const std::string& line) {
  std::lock_guard<std::mutex> lock(out_mu);
  if (out == nullptr) return;
  std::fputs(line.c_str(), out);
  std::fflush(out);
}

// Reads "cancel" / "drain" from the agent; end of file is a cancel. After a
// stop request the rank has `grace` seconds to stop on its own.
void WatchAgent(std::atomic<int>* stop, double grace) {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "cancel") stop->store(std::max(stop->load(), train::kStopCancel));
    if (line == "drain") stop->store(train::kStopDrain);
    if (stop->load() != train::kStopNone) break;
  }
  if (stop->load() == train::kStopNone) stop->store(train::kStopCancel);
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(grace * 1000)));
  Send(agent::ErrorLine("stopped: the stage did not reach a step boundary in time", "cancelled"));
  std::fflush(stderr);
  _exit(agent::kRankExitStopped);
}

bool NeedsPassiveOpenMp(const v1::StageSpec& s) {
  return s.has_importance() || s.has_evaluate() || (s.has_prune() && s.prune().has_search());
}

std::string FailureOf(const absl::Status& st, const std::atomic<int>& stop) {
  if (absl::IsCancelled(st) || stop.load() != train::kStopNone) return "cancelled";
  if (absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st) || absl::IsAborted(st)) return "infrastructure";
  return "task";
}

absl::StatusOr<nlohmann::json> Run(const Flags& f, const v1::Assignment& a, std::atomic<int>* stop) {
  stages::StageContext ctx;
  ctx.rank = a.rank();
  ctx.world_size = a.world_size();
  ctx.threads = f.threads;
  ctx.stop = stop;
  ctx.note = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  ctx.progress = [](const stages::Progress& p) {
    v1::Progress v;
    v.set_phase(p.phase);
    v.set_step(p.step);
    v.set_total_steps(p.total_steps);
    v.set_tokens(p.tokens);
    v.set_loss(p.loss);
    v.set_tokens_per_second(p.tokens_per_second);
    v.set_mfu(p.mfu);
    v.set_eta_seconds(p.eta_seconds);
    Send(agent::ProgressLine(v, p.milestone));
  };
  stages::DistSession dist;
  std::unique_ptr<dist::Rendezvous> rendezvous;
  if (a.world_size() > 1) {
    job::WorkerIdentity id;
    id.worker_id = f.worker_id;
    ASSIGN_OR_RETURN(id.secret, rpc::ReadTokenFile(f.secret_file));
    if (!f.token_file.empty()) {
      ASSIGN_OR_RETURN(id.token, rpc::ReadTokenFile(f.token_file));
    }
    rpc::ChannelOptions co;
    co.address = f.coordinator;
    co.token = id.token;
    co.tls_ca = f.tls_ca, co.tls_cert = f.tls_cert, co.tls_key = f.tls_key;
    co.fast_reconnect = true;
    ASSIGN_OR_RETURN(auto channel, rpc::MakeChannel(co));
    rendezvous = job::MakeCoordinatorRendezvous(channel, id, a.task_id(), a.attempt());
    stages::DistOptions o;
    o.rank = a.rank();
    o.world_size = a.world_size();
    o.rendezvous = rendezvous.get();
    o.hostname = f.advertise_host;
    o.timeout_s = f.dist_timeout;
    ctx.Phase("connecting ranks");
    ASSIGN_OR_RETURN(dist, stages::OpenDist(o));
    ctx.comm = dist.comm.get();
  }
  job::RankEnv env;
  env.storage_roots = f.storage_roots.empty()
                          ? std::vector<std::string>(a.storage_roots().begin(), a.storage_roots().end())
                          : f.storage_roots;
  env.memory_budget = f.memory_budget;
  env.device = f.device;
  nlohmann::json result;
  RETURN_IF_ERROR(CatchTorch("rank", [&]() -> absl::Status {
    ASSIGN_OR_RETURN(result, job::RunAssignment(a, env, ctx));
    return absl::OkStatus();
  }));
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the agent (also set before exec)
  TuneMalloc();
  model::InstallCachingCpuAllocator();
  Flags f;
  CLI::App app{"topiary-rank: one rank of a Topiary task (started by topiary-worker)"};
  app.add_option("--assignment", f.assignment, "the assignment (binary topiary.v1.Assignment)")->required();
  app.add_option("--coordinator", f.coordinator, "coordinator HOST:PORT")->required();
  app.add_option("--worker-id", f.worker_id, "the worker this rank runs for")->required();
  app.add_option("--secret-file", f.secret_file, "file holding the worker's secret")->required();
  app.add_option("--token-file", f.token_file, "file holding the worker token");
  app.add_option("--tls-ca", f.tls_ca);
  app.add_option("--tls-cert", f.tls_cert);
  app.add_option("--tls-key", f.tls_key);
  app.add_option("--advertise-host", f.advertise_host, "address other ranks reach this one at")->capture_default_str();
  app.add_option("--device", f.device)->capture_default_str();
  app.add_option("--storage-root", f.storage_roots, "storage roots (default: the coordinator's)");
  app.add_option("--memory-budget", f.memory_budget, "bytes this rank may use (-1: unchecked)");
  app.add_option("--dist-timeout", f.dist_timeout, "seconds before a silent peer fails the task")
      ->capture_default_str();
  app.add_option("--stop-grace", f.stop_grace, "seconds to reach a step boundary after a stop request")
      ->capture_default_str();
  app.add_option("--threads", f.threads, "CPU threads (0: all)");
  CLI11_PARSE(app, argc, argv);
  out = fdopen(agent::kRankProtocolFd, "w");
  if (out == nullptr) {
    std::fprintf(stderr, "topiary-rank: fd %d is not open (start ranks through topiary-worker)\n",
                 agent::kRankProtocolFd);
    return 2;
  }
  v1::Assignment a;
  absl::StatusOr<std::string> blob = ReadFileToString(f.assignment, size_t{64} << 20);
  if (!blob.ok() || !a.ParseFromString(*blob)) {
    Send(agent::ErrorLine(absl::StrCat("cannot read the assignment ", f.assignment,
                                       blob.ok() ? "" : absl::StrCat(": ", blob.status().message())),
                          "infrastructure"));
    return agent::kRankExitFailed;
  }
  if (NeedsPassiveOpenMp(a.spec().stages(std::clamp(a.stage_index(), 0, a.spec().stages_size() - 1)))) {
    ReexecWithPassiveOpenMp();  // fp32 forward passes
  }
  std::fprintf(stderr, "topiary-rank: %s rank %d of %d, attempt %d\n", a.task_id().c_str(), a.rank(), a.world_size(),
               a.attempt());
  static std::atomic<int> stop{train::kStopNone};
  std::thread(WatchAgent, &stop, f.stop_grace).detach();
  absl::StatusOr<nlohmann::json> r = Run(f, a, &stop);
  if (r.ok()) {
    Send(agent::ResultLine(*r));
    std::fflush(stderr);
    _exit(agent::kRankExitOk);  // not waiting for the stdin reader
  }
  const std::string failure = FailureOf(r.status(), stop);
  std::fprintf(stderr, "topiary-rank: %s\n", r.status().ToString().c_str());
  Send(agent::ErrorLine(std::string(r.status().message()), failure));
  std::fflush(stderr);
  _exit(failure == "cancelled" ? agent::kRankExitStopped : agent::kRankExitFailed);
}
