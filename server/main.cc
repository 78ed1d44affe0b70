// topiary-coordinator: serves topiary.v1.JobService (plus gRPC health and
// reflection) over a durable RocksDB store until SIGTERM, then drains and
// exits 0; the gang scheduler serves topiary.v1.WorkerService to workers.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/cli_flags.h"
#include "common/clock.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/mutex.h"
#include "common/process.h"
#include "common/signals.h"
#include <prometheus/exposer.h>

#include "server/jobs/job_manager.h"
#include "server/jobs/report_writer.h"
#include "server/metrics/metrics.h"
#include "server/rpc/auth.h"
#include "server/rpc/job_service.h"
#include "server/rpc/parse_errors.h"
#include "server/rpc/worker_service.h"
#include "server/scheduler/rendezvous.h"
#include "server/scheduler/scheduler.h"
#include "server/store/backup.h"
#include "server/store/store.h"

namespace {

using namespace topiary;
using namespace topiary::server;

struct CoordinatorConfig {
  std::string listen = "127.0.0.1:7070";
  std::string metrics_address = "127.0.0.1:9464";
  std::string health_listen;  // plaintext grpc.health.v1 only (for probes that cannot speak TLS); empty: none
  std::string state_dir;
  bool sync = true;
  std::vector<std::string> storage_roots;
  std::string tokens, tls_cert, tls_key, tls_client_ca;
  bool allow_anonymous = false;
  int max_priority = 100;
  std::string port_file;
  std::string log_level = "info";
  int drain_seconds = 10;
  int64_t max_queued = 10000;
  int64_t max_queued_per_user = 1000;
  std::string retention = "30d";
  double lease_seconds = 10;
  double backoff_seconds = 1;
  double recovery_grace_seconds = 0;
  double forget_workers_after_seconds = 3600;
  std::string backup_dir;  // periodic checkpoints of the store (empty: none)
  std::string backup_every = "6h";
  int backup_keep = 7;
  std::string backup_to, restore_from;  // one-off, without serving
};

// Exit codes: 0 after a drain on SIGTERM/SIGINT; 2 for bad flags or files;
// 1 when the store cannot be opened or the address cannot be bound.
// "30d", "12h", "90m", "3600s" (a plain number is seconds); -1 when unreadable.
int64_t RetentionMicros(const std::string& text) {
  if (text.empty()) return -1;
  double unit = 1;
  std::string number = text;
  switch (text.back()) {
    case 'd':
      unit = 86400, number.pop_back();
      break;
    case 'h':
      unit = 3600, number.pop_back();
      break;
    case 'm':
      unit = 60, number.pop_back();
      break;
    case 's':
      number.pop_back();
      break;
    default:
      break;
  }
  double v = 0;
  if (!absl::SimpleAtod(number, &v) || !(v > 0) || v * unit > 1e10) return -1;
  return static_cast<int64_t>(v * unit * 1e6);
}

// Whether HOST:PORT listens on loopback only (127.0.0.0/8, ::1, localhost).
bool IsLoopback(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// --backup-to: a checkpoint of a store no coordinator is running on.
// --restore-from: a backup copied into an empty --state-dir.
int RunOffline(const CoordinatorConfig& c) {
  if (!c.restore_from.empty()) {
    absl::StatusOr<int64_t> jobs = RestoreBackup(c.restore_from, c.state_dir);
    if (!jobs.ok()) {
      std::fprintf(stderr, "topiary-coordinator: %s\n", std::string(jobs.status().message()).c_str());
      return jobs.status().code() == absl::StatusCode::kUnavailable ? 1 : 2;
    }
    std::printf("restored %lld jobs from %s into %s\n", static_cast<long long>(*jobs), c.restore_from.c_str(),
                c.state_dir.c_str());
    return 0;
  }
  RocksStoreOptions so;
  so.dir = c.state_dir;
  absl::StatusOr<std::unique_ptr<Store>> store = OpenRocksStore(so);
  if (!store.ok()) {
    std::fprintf(stderr, "topiary-coordinator: --backup-to: %s (a running coordinator backs up with --backup-dir)\n",
                 std::string(store.status().message()).c_str());
    return 1;
  }
  if (absl::Status st = (*store)->Checkpoint(c.backup_to); !st.ok()) {
    std::fprintf(stderr, "topiary-coordinator: --backup-to: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  std::printf("backed up %s to %s\n", c.state_dir.c_str(), c.backup_to.c_str());
  return 0;
}

int Run(const CoordinatorConfig& c) {
  log::Info(absl::StrCat(
      "topiary-coordinator: listen=", c.listen,
      " metrics_address=", c.metrics_address.empty() ? "(off)" : c.metrics_address, " state_dir=", c.state_dir,
      " sync=", c.sync ? "true" : "false", " storage_roots=[", absl::StrJoin(c.storage_roots, ","),
      "] tokens=", c.tokens.empty() ? "(none: authentication off)" : c.tokens,
      " tls=", c.tls_cert.empty() ? "off" : (c.tls_client_ca.empty() ? "on" : "mutual"),
      " drain_seconds=", c.drain_seconds, " max_queued=", c.max_queued, " max_priority=", c.max_priority,
      " lease_seconds=", c.lease_seconds, " backoff_seconds=", c.backoff_seconds));
  Authenticator auth;
  if (!c.tokens.empty()) {
    absl::StatusOr<Authenticator> a = Authenticator::FromFile(c.tokens);
    if (!a.ok()) {
      std::fprintf(stderr, "topiary-coordinator: %s\n", std::string(a.status().message()).c_str());
      return 2;
    }
    auth = std::move(*a);
  } else {
    log::Warn(absl::StrCat("no --tokens: every caller of ", c.listen,
                           " is an anonymous admin; use this only on a trusted machine"));
  }
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!c.tls_cert.empty() || !c.tls_key.empty()) {
    auto cert = ReadFileToString(c.tls_cert, 1 << 20), key = ReadFileToString(c.tls_key, 1 << 20);
    if (!cert.ok() || !key.ok()) {
      std::fprintf(stderr, "topiary-coordinator: --tls-cert/--tls-key: %s\n",
                   std::string((cert.ok() ? key.status() : cert.status()).message()).c_str());
      return 2;
    }
    grpc::SslServerCredentialsOptions o;
    o.pem_key_cert_pairs.push_back({*key, *cert});
    if (!c.tls_client_ca.empty()) {
      auto ca = ReadFileToString(c.tls_client_ca, 1 << 20);
      if (!ca.ok()) {
        std::fprintf(stderr, "topiary-coordinator: --tls-client-ca: %s\n", std::string(ca.status().message()).c_str());
        return 2;
      }
      o.pem_root_certs = *ca;
      o.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    creds = grpc::SslServerCredentials(o);
  }
  RocksStoreOptions so;
  so.dir = c.state_dir;
  so.sync = c.sync;
  absl::StatusOr<std::unique_ptr<Store>> opened = OpenRocksStore(so);
  if (!opened.ok()) {
    log::Error(std::string(opened.status().message()));
    return 1;
  }
  CoordinatorMetrics metrics;
  // Health follows the store: NOT_SERVING while writes fail, SERVING again once they work.
  std::atomic<grpc::Server*> serving{nullptr};
  std::atomic<grpc::Server*> health_serving{nullptr};
  std::atomic<bool> store_healthy{true};
  auto set_health = [&](bool healthy) {
    store_healthy.store(healthy);
    metrics.SetStoreHealthy(healthy);
    if (grpc::Server* s = serving.load()) s->GetHealthCheckService()->SetServingStatus(healthy);
    if (grpc::Server* h = health_serving.load()) h->GetHealthCheckService()->SetServingStatus("", healthy);
  };
  std::unique_ptr<Store> store = WithWriteTiming(WithHealth(std::move(*opened), set_health), &metrics);
  JobManagerOptions jo;
  jo.storage_roots = c.storage_roots;
  jo.jobs_root = (c.storage_roots.empty() ? c.state_dir : c.storage_roots[0]) + "/jobs";
  jo.max_queued = c.max_queued;
  jo.max_queued_per_user = c.max_queued_per_user;
  jo.retention_micros = RetentionMicros(c.retention);
  jo.limits.max_priority = c.max_priority;
  JobManager jobs(store.get(), Clock::Real(), jo);
  if (absl::Status st = jobs.Recover(); !st.ok()) {
    log::Error(absl::StrCat("recovery: ", st.message()));
    return 1;
  }
  int64_t total = 0;
  for (const auto& [state, n] : jobs.CountByState()) total += n;
  log::Info(absl::StrCat("recovered ", total, " jobs from ", c.state_dir));
  SchedulerOptions sched_options;
  sched_options.lease_micros = static_cast<int64_t>(c.lease_seconds * 1e6);
  sched_options.backoff_micros = static_cast<int64_t>(c.backoff_seconds * 1e6);
  sched_options.recovery_grace_micros = static_cast<int64_t>(c.recovery_grace_seconds * 1e6);
  sched_options.forget_lost_micros = static_cast<int64_t>(c.forget_workers_after_seconds * 1e6);
  sched_options.storage_root = c.storage_roots.empty() ? c.state_dir : c.storage_roots[0];
  sched_options.storage_roots = c.storage_roots;
  RendezvousStore rendezvous;
  Scheduler scheduler(&jobs, store.get(), Clock::Real(), sched_options, &rendezvous);
  if (absl::Status st = scheduler.Recover(); !st.ok()) {
    log::Error(absl::StrCat("scheduler recovery: ", st.message()));
    return 1;
  }
  jobs.SetListener([&](const std::string& id) { scheduler.Notify(id); });
  // Retention: finished jobs older than --retention go, with their events, once a minute.
  Mutex sweep_mu;
  CondVar sweep_cv;
  bool sweep_stop = false;
  // Backups: a checkpoint every --backup-every into --backup-dir, the first one at start.
  const absl::Duration backup_every = absl::Microseconds(RetentionMicros(c.backup_every));
  absl::Time next_sweep = absl::Now() + absl::Seconds(60);
  absl::Time next_backup = c.backup_dir.empty() ? absl::InfiniteFuture() : absl::Now();
  std::thread sweeper([&] {
    MutexLock lock(&sweep_mu);
    for (;;) {
      sweep_cv.WaitWithDeadline(&sweep_mu, std::min(next_sweep, next_backup));
      if (sweep_stop) return;
      if (absl::Now() >= next_sweep) {
        next_sweep = absl::Now() + absl::Seconds(60);
        absl::StatusOr<int> n = jobs.DeleteExpired();
        if (!n.ok())
          log::Warn(absl::StrCat("retention: ", n.status().message()));
        else if (*n > 0)
          log::Info(absl::StrCat("retention: deleted ", *n, " finished jobs older than ", c.retention));
      }
      if (absl::Now() >= next_backup) {
        next_backup = absl::Now() + backup_every;
        absl::StatusOr<std::string> written =
            WriteBackup(store.get(), c.backup_dir, c.backup_keep, Clock::Real()->WallMicros());
        if (!written.ok()) {
          log::Error(absl::StrCat("backup: ", written.status().message()));
        } else {
          log::Info(absl::StrCat("backup: wrote ", *written));
          metrics.SetLastBackup(absl::ToUnixSeconds(absl::Now()));
        }
      }
    }
  });
  // Every way out of Run stops it (a joinable thread's destructor aborts the process).
  absl::Cleanup stop_sweeper = [&] {
    {
      MutexLock lock(&sweep_mu);
      sweep_stop = true;
    }
    sweep_cv.SignalAll();
    sweeper.join();
  };
  ReportWriter reports(&jobs);
  scheduler.SetJobEndedListener([&](const std::string& id) { reports.Enqueue(id); });
  scheduler.Start();
  metrics.WatchJobs(&jobs);
  metrics.WatchScheduler(&scheduler);
  std::unique_ptr<prometheus::Exposer> exposer;
  int metrics_port = 0;
  if (!c.metrics_address.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(c.metrics_address);
    } catch (const std::exception& e) {
      log::Error(absl::StrCat("--metrics-address ", c.metrics_address, ": ", e.what()));
      return 1;
    }
    exposer->RegisterCollectable(metrics.registry());
    exposer->RegisterCollectable(metrics.job_gauges());
    exposer->RegisterCollectable(metrics.scheduler_series());
    metrics_port = exposer->GetListeningPorts().empty() ? 0 : exposer->GetListeningPorts()[0];
    log::Info(absl::StrCat("metrics on port ", metrics_port, " at /metrics"));
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  JobServiceImpl job_service(&jobs, &auth, [&](const char* method, int code) { metrics.CountRequest(method, code); });
  builder.RegisterService(&job_service);
  WorkerServiceImpl worker_service(&scheduler, &rendezvous, &auth,
                                   [&](const char* method, int code) { metrics.CountRequest(method, code); });
  builder.RegisterService(&worker_service);
  builder.experimental().SetInterceptorCreators(ParseErrorInterceptors());
  int port = 0;
  builder.AddListeningPort(c.listen, creds, &port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    log::Error(absl::StrCat("cannot listen on ", c.listen));
    return 1;
  }
  // Kubernetes' gRPC probes speak plaintext only: with TLS on --listen they
  // need a port of their own, serving the health service and nothing else.
  std::unique_ptr<grpc::Server> health_server;
  int health_port = 0;
  if (!c.health_listen.empty()) {
    grpc::ServerBuilder health_builder;
    health_builder.AddListeningPort(c.health_listen, grpc::InsecureServerCredentials(), &health_port);
    health_server = health_builder.BuildAndStart();
    if (!health_server || health_port == 0) {
      log::Error(absl::StrCat("--health-listen: cannot listen on ", c.health_listen));
      return 1;
    }
    // Service "": ready (follows the store). Service "liveness": the process
    // answers; a full disk makes it unready, not restarted.
    health_server->GetHealthCheckService()->SetServingStatus("", false);  // until the API serves
    health_server->GetHealthCheckService()->SetServingStatus("liveness", true);
    log::Info(absl::StrCat("health on port ", health_port));
  }
  if (!c.port_file.empty()) {
    const std::string ports = absl::StrCat(port, "\n", metrics_port, "\n", health_port, "\n");
    if (absl::Status st = WriteFileAtomically(c.port_file, ports); !st.ok()) {
      log::Error(absl::StrCat("--port-file: ", st.message()));
      return 1;
    }
  }
  serving.store(server.get());
  health_serving.store(health_server.get());
  server->GetHealthCheckService()->SetServingStatus(store_healthy.load());
  if (health_server) health_server->GetHealthCheckService()->SetServingStatus("", store_healthy.load());
  log::Info(absl::StrCat("serving on port ", port));
  const int sig = WaitForTerminationSignal();
  log::Info(absl::StrCat("signal ", sig, ": draining for up to ", c.drain_seconds, "s"));
  serving.store(nullptr);
  health_serving.store(nullptr);
  if (health_server) {  // not ready from here on; the probes' port goes with the API
    health_server->GetHealthCheckService()->SetServingStatus(false);
  }
  jobs.Shutdown();  // open watches end with UNAVAILABLE; clients reconnect with their last seq
  scheduler.Stop();
  std::move(stop_sweeper).Invoke();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(c.drain_seconds));
  if (health_server) health_server->Shutdown(std::chrono::system_clock::now());
  log::Info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  topiary::TuneMalloc();
  topiary::BlockTerminationSignals();
  CoordinatorConfig c;
  CLI::App app{"topiary-coordinator: the Topiary job coordinator"};
  app.add_option("--listen", c.listen, "gRPC address HOST:PORT (port 0 picks a free one)")->capture_default_str();
  app.add_option("--state-dir", c.state_dir, "RocksDB directory of the durable job state")->required();
  app.add_option("--sync", c.sync, "fsync every state change before replying (true|false)")->capture_default_str();
  app.add_option("--storage-root", c.storage_roots, "directory every path in a job spec must lie under (repeatable)");
  app.add_option("--tokens", c.tokens, "bearer tokens file: TOKEN PRINCIPAL ROLE per line");
  app.add_option("--tls-cert", c.tls_cert, "server certificate (PEM)");
  app.add_option("--tls-key", c.tls_key, "server private key (PEM)");
  app.add_option("--tls-client-ca", c.tls_client_ca, "CA for client certificates: mutual TLS (PEM)");
  app.add_option("--metrics-address", c.metrics_address, "Prometheus /metrics HOST:PORT (empty: off)")
      ->capture_default_str();
  app.add_option("--health-listen", c.health_listen,
                 "also serve grpc.health.v1, plaintext and alone, on HOST:PORT, for probes: service \"\" is "
                 "readiness, \"liveness\" liveness (empty: off)");
  app.add_option("--port-file", c.port_file,
                 "write the bound gRPC, metrics and health ports here (one per line; 0: off) once serving");
  app.add_option("--max-queued", c.max_queued, "queued jobs beyond which CreateJob is refused")->capture_default_str();
  app.add_option("--max-queued-per-user", c.max_queued_per_user, "queued jobs one principal may have")
      ->capture_default_str();
  app.add_option("--retention", c.retention, "finished jobs are deleted after this long (30d, 12h, 90m, 3600s)")
      ->capture_default_str();
  app.add_option("--lease-seconds", c.lease_seconds, "a worker silent this long is lost")->capture_default_str();
  app.add_option("--recovery-grace-seconds", c.recovery_grace_seconds,
                 "after a restart, how long registered workers have to come back (0: three leases)")
      ->capture_default_str();
  app.add_option("--forget-workers-after-seconds", c.forget_workers_after_seconds,
                 "a lost worker is deleted this long after it missed its lease")
      ->capture_default_str();
  app.add_option("--backoff-seconds", c.backoff_seconds, "first retry delay (doubles per retry, at most 60s)")
      ->capture_default_str();
  app.add_option("--log-level", c.log_level, "debug|info|warn|error")->capture_default_str();
  app.add_option("--drain-seconds", c.drain_seconds, "grace period on SIGTERM")->capture_default_str();
  app.add_flag("--allow-anonymous", c.allow_anonymous,
               "without --tokens, serve a non-loopback address anyway (every caller is an admin)");
  app.add_option("--max-priority", c.max_priority, "the highest priority a spec may ask for (0-100)")
      ->capture_default_str();
  app.add_option("--backup-dir", c.backup_dir,
                 "write a checkpoint of the store here every --backup-every while serving (empty: no backups)");
  app.add_option("--backup-every", c.backup_every, "how often (30d, 12h, 90m, 3600s)")->capture_default_str();
  app.add_option("--backup-keep", c.backup_keep, "backups kept (the newest)")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_option("--backup-to", c.backup_to,
                 "write one checkpoint of --state-dir here and exit (no coordinator may be running on it)");
  app.add_option("--restore-from", c.restore_from, "copy this backup into the empty --state-dir and exit");
  bool check_flags = false;
  app.add_flag("--check-flags", check_flags, "check the flags (and TOPIARY_COORDINATOR_* variables), then exit");
  app.footer("Every flag may also come from a variable: --max-queued from TOPIARY_COORDINATOR_MAX_QUEUED.\n");
  topiary::FlagsFromEnvironment(app, "TOPIARY_COORDINATOR");
  CLI11_PARSE(app, argc, argv);
  topiary::log::Level level;
  if (!topiary::log::ParseLevel(c.log_level, &level)) {
    std::fprintf(stderr, "topiary-coordinator: --log-level: unknown level '%s'\n", c.log_level.c_str());
    return 2;
  }
  if ((c.tls_cert.empty()) != (c.tls_key.empty())) {
    std::fprintf(stderr, "topiary-coordinator: --tls-cert and --tls-key go together\n");
    return 2;
  }
  if (!c.tls_client_ca.empty() && c.tls_cert.empty()) {
    std::fprintf(stderr, "topiary-coordinator: --tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)\n");
    return 2;
  }
  if (c.tokens.empty() && !c.allow_anonymous && !IsLoopback(c.listen)) {
    std::fprintf(stderr,
                 "topiary-coordinator: --listen %s is not a loopback address and there is no --tokens: give a tokens "
                 "file, or --allow-anonymous to let anyone who reaches it act as an admin\n",
                 c.listen.c_str());
    return 2;
  }
  if (RetentionMicros(c.retention) < 0) {
    std::fprintf(stderr, "topiary-coordinator: --retention: '%s' is not a duration like 30d, 12h, 90m or 3600s\n",
                 c.retention.c_str());
    return 2;
  }
  if (c.max_priority < 0 || c.max_priority > 100) {
    std::fprintf(stderr, "topiary-coordinator: --max-priority: must be in [0, 100]\n");
    return 2;
  }
  if (RetentionMicros(c.backup_every) < 0) {
    std::fprintf(stderr, "topiary-coordinator: --backup-every: '%s' is not a duration like 30d, 12h, 90m or 3600s\n",
                 c.backup_every.c_str());
    return 2;
  }
  if (!c.backup_to.empty() && !c.restore_from.empty()) {
    std::fprintf(stderr, "topiary-coordinator: --backup-to and --restore-from exclude each other\n");
    return 2;
  }
  if (check_flags) {
    std::printf("topiary-coordinator: flags ok\n");
    return 0;
  }
  topiary::log::SetLevel(level);
  if (!c.backup_to.empty() || !c.restore_from.empty()) return RunOffline(c);
  return Run(c);
}
