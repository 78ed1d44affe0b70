// topiary-worker: the worker agent. Registers with a coordinator, runs the
// ranks it is assigned as child processes (topiary-rank, next to this
// binary), and drains on SIGTERM/SIGINT: ranks checkpoint and report, then
// it exits 0 within --drain-seconds. Exit codes: 0 after a drain; 1 when the
// coordinator refuses the registration (bad token); 2 for bad flags.
#include <limits.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/cli_flags.h"
#include "common/log.h"
#include "common/process.h"
#include "common/rpc/channel.h"
#include "common/signals.h"
#include "common/units.h"
#include "worker/agent/agent.h"

namespace {

std::string SelfDir() {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}

std::string HostName() {
  char buf[HOST_NAME_MAX + 1] = {0};
  return gethostname(buf, HOST_NAME_MAX) == 0 ? buf : "worker";
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "topiary-worker: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  topiary::TuneMalloc();
  topiary::BlockTerminationSignals();
  signal(SIGPIPE, SIG_IGN);  // a rank that died leaves a closed pipe; writing to it must not kill the agent
  topiary::agent::AgentOptions o;
  std::string memory, log_level = "info";
  o.name = HostName();
  o.work_dir = "/tmp/topiary-worker";
  o.rank_binary = SelfDir() + "/topiary-rank";
  CLI::App app{"topiary-worker: runs Topiary tasks for a coordinator"};
  app.add_option("--coordinator", o.coordinator.address, "coordinator address HOST:PORT")->required();
  app.add_option("--slots", o.slots, "slots this worker offers (GPUs, or CPU ranks)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--device", o.device, "cpu | cuda")->capture_default_str();
  app.add_option("--work-dir", o.work_dir, "local directory for rank logs and assignments")->capture_default_str();
  app.add_option("--name", o.name, "name shown by the coordinator (default: the host name)");
  app.add_option("--token-file", o.token_file, "file whose first line is the worker token");
  app.add_option("--tls-ca", o.tls_ca, "CA certificate (PEM) that signed the coordinator's: TLS");
  app.add_option("--tls-cert", o.tls_cert, "client certificate (PEM): mutual TLS");
  app.add_option("--tls-key", o.tls_key, "client private key (PEM)");
  app.add_option("--storage-root", o.storage_roots,
                 "where shared storage is mounted here (repeatable; default: the coordinator's roots)");
  app.add_option("--advertise-host", o.advertise_host,
                 "address other workers reach this one's ranks at (default: the address that reaches the coordinator)");
  app.add_option("--drain-seconds", o.drain_seconds, "on SIGTERM, how long ranks get to checkpoint and report")
      ->capture_default_str();
  app.add_option("--dist-timeout", o.dist_timeout, "seconds before a silent peer rank fails a task")
      ->capture_default_str();
  app.add_option("--threads-per-rank", o.threads_per_rank, "CPU threads per rank (0: cores / slots)");
  app.add_option("--memory", memory, "memory ranks may use in all, e.g. 20GiB (default: the machine's)");
  app.add_option("--rank-binary", o.rank_binary, "the rank program")->capture_default_str();
  app.add_option("--log-level", log_level, "debug|info|warn|error")->capture_default_str();
  bool check_flags = false;
  app.add_flag("--check-flags", check_flags, "check the flags (and TOPIARY_WORKER_* variables), then exit");
  app.footer("Every flag may also come from a variable: --slots from TOPIARY_WORKER_SLOTS.\n");
  topiary::FlagsFromEnvironment(app, "TOPIARY_WORKER");
  CLI11_PARSE(app, argc, argv);
  topiary::log::Level level;
  if (!topiary::log::ParseLevel(log_level, &level)) return Fail("--log-level: unknown level '" + log_level + "'");
  topiary::log::SetLevel(level);
  if (o.device != "cpu" && o.device != "cuda") return Fail("--device: expected cpu or cuda, got '" + o.device + "'");
  if (o.tls_cert.empty() != o.tls_key.empty()) return Fail("--tls-cert and --tls-key go together");
  if (!(o.drain_seconds > 0)) return Fail("--drain-seconds: must be positive");
  if (!memory.empty()) {
    absl::StatusOr<int64_t> bytes = topiary::ParseBytes(memory, "--memory");
    if (!bytes.ok()) return Fail(std::string(bytes.status().message()));
    o.memory_bytes = *bytes;
  }
  if (check_flags) {  // before the files they name are read: they may be mounted elsewhere here
    std::printf("topiary-worker: flags ok\n");
    return 0;
  }
  if (access(o.rank_binary.c_str(), X_OK) != 0) return Fail("--rank-binary: " + o.rank_binary + " is not executable");
  if (!o.token_file.empty()) {
    absl::StatusOr<std::string> token = topiary::rpc::ReadTokenFile(o.token_file);
    if (!token.ok()) return Fail(absl::StrCat("--token-file: ", token.status().message()));
    o.coordinator.token = *token;
  }
  o.coordinator.tls_ca = o.tls_ca;
  o.coordinator.tls_cert = o.tls_cert;
  o.coordinator.tls_key = o.tls_key;
  o.coordinator.fast_reconnect = true;
  if (o.advertise_host.empty()) o.advertise_host = topiary::agent::LocalAddressFor(o.coordinator.address);
  o.work_dir = std::filesystem::absolute(o.work_dir).string();
  topiary::log::Info(absl::StrCat("topiary-worker: coordinator=", o.coordinator.address, " name=", o.name,
                                  " slots=", o.slots, " device=", o.device, " work_dir=", o.work_dir,
                                  " advertise_host=", o.advertise_host, " storage_roots=[",
                                  absl::StrJoin(o.storage_roots, ","), "] drain_seconds=", o.drain_seconds,
                                  " tls=", o.tls_ca.empty() && o.tls_cert.empty() ? "off" : "on",
                                  " token=", o.token_file.empty() ? "(none)" : o.token_file));
  topiary::agent::Agent agent(o);
  std::thread signals([&agent] {
    const int sig = topiary::WaitForTerminationSignal();
    topiary::log::Info(absl::StrCat("topiary-worker: signal ", sig, ": draining"));
    agent.Drain();
  });
  signals.detach();
  absl::Status st = agent.Run();
  if (!st.ok()) {
    std::fprintf(stderr, "topiary-worker: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
