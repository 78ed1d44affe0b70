#include "client/run_command.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client/cli_util.h"
#include "client/job_view.h"
#include "client/local_state.h"
#include "client/run_plan.h"
#include "common/child_process.h"
#include "common/file_util.h"
#include "common/process.h"
#include "common/report/job_report.h"
#include "common/rpc/channel.h"
#include "common/signals.h"
#include "common/spec/spec_io.h"
#include "common/spec/stages.h"
#include "common/spec/validate.h"
#include "common/status_macros.h"
#include "topiary/v1/job_service.grpc.pb.h"

namespace topiary::cli {
namespace {

namespace fs = std::filesystem;

constexpr int kExitJobFailed = 5;
constexpr int kExitJobCancelled = 6;

struct RunFlags {
  std::string spec_file, state_dir, storage, device = "cpu", time_budget;
  int workers = 1, slots_per_worker = 0;
  bool resume = false, dry_run = false;
  double drain_seconds = 30;
};

absl::StatusOr<v1::JobSpec> LoadSpec(const std::string& file) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(file, 16 << 20));
  ASSIGN_OR_RETURN(v1::JobSpec spec, spec::ParseJobSpec(text));
  spec::ResolveRelativePaths(&spec, fs::absolute(file).parent_path().string());
  return spec;
}

int SlotsNeeded(const v1::JobSpec& spec) {
  return std::max(1, std::max(1, spec.resources().ranks()) * std::max(1, spec.resources().slots_per_rank()));
}

// Children this run started, stopped in reverse order on every way out.
// Thread-safe: the signal thread may stop them while the main thread does.
class Children {
 public:
  ~Children() { StopAll(); }
  void Add(pid_t pid, double drain) {
    std::lock_guard<std::mutex> lock(mu_);
    pids_.emplace_back(pid, drain);
  }
  void StopAll() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = pids_.rbegin(); it != pids_.rend(); ++it) {
      StopChild(it->first, SIGTERM, absl::Milliseconds(static_cast<int64_t>(it->second * 1000)));
    }
    pids_.clear();
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<pid_t, double>> pids_;
};

class Run {
 public:
  explicit Run(RunFlags f) : f_(std::move(f)) {}

  int Main() {
    absl::StatusOr<v1::JobSpec> spec = Prepare();
    if (!spec.ok()) return ReportStatus("run", spec.status());
    PlanOptions po;
    po.workers = f_.workers;
    po.slots_per_worker = f_.slots_per_worker;
    // Before any thread (planning starts libtorch's): Ctrl-C is handled here,
    // not by the children. A dry run starts nothing, so Ctrl-C just ends it.
    if (!f_.dry_run) BlockTerminationSignals();
    if (!f_.time_budget.empty()) {
      absl::Status fitted = FitToTimeBudget(&*spec, po);
      if (!fitted.ok()) return ReportStatus("run", fitted);
      sigset_t pending;
      sigpending(&pending);
      if (!f_.dry_run && (sigismember(&pending, SIGINT) || sigismember(&pending, SIGTERM))) {
        std::fprintf(stderr, "topiary run: interrupted while planning; nothing was started\n");
        return kExitJobCancelled;
      }
    }
    if (f_.dry_run) {
      absl::StatusOr<Plan> plan = PlanJob(*spec, po);
      if (!plan.ok()) return ReportStatus("run", plan.status());
      std::printf("%s", plan->text.c_str());
      return kExitOk;
    }
    absl::StatusOr<int> code = Start(*spec);
    children_.StopAll();
    if (!code.ok()) return ReportStatus("run", code.status());
    return *code;
  }

 private:
  absl::StatusOr<v1::JobSpec> Prepare() {
    if (f_.workers < 1 || f_.workers > 64) return absl::InvalidArgumentError("--workers: must be in [1, 64]");
    if (f_.device != "cpu" && f_.device != "cuda") {
      return absl::InvalidArgumentError(absl::StrCat("--device: expected cpu or cuda, got '", f_.device, "'"));
    }
    f_.storage = fs::absolute(f_.storage.empty() ? fs::current_path() : fs::path(f_.storage)).lexically_normal();
    if (f_.state_dir.empty()) f_.state_dir = f_.storage + "/.topiary";
    if (f_.resume && f_.spec_file.empty()) return v1::JobSpec();
    if (f_.spec_file.empty()) return absl::InvalidArgumentError("spec: required (or --resume)");
    ASSIGN_OR_RETURN(v1::JobSpec spec, LoadSpec(f_.spec_file));
    RETURN_IF_ERROR(spec::ValidateJobSpec(spec, {f_.storage}));
    if (f_.slots_per_worker <= 0) f_.slots_per_worker = SlotsNeeded(spec);
    if (f_.workers * f_.slots_per_worker < SlotsNeeded(spec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--workers x --slots-per-worker: ", f_.workers * f_.slots_per_worker,
                       " slots, but a stage needs ", SlotsNeeded(spec)));
    }
    return spec;
  }

  // --time-budget: plans the job from steps measured now and, when the
  // estimate is over the budget, scales every token budget by one factor so
  // that it fits; the shapes and every other setting stay.
  absl::Status FitToTimeBudget(v1::JobSpec* spec, const PlanOptions& po) {
    absl::Duration d;
    if (!absl::ParseDuration(f_.time_budget, &d) || d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--time-budget: expected a positive duration such as 9m or 600s, got '", f_.time_budget, "'"));
    }
    if (f_.resume) return absl::InvalidArgumentError("--time-budget: not with --resume (the job's budgets are set)");
    const double budget = absl::ToDoubleSeconds(d);
    ASSIGN_OR_RETURN(Plan plan, PlanJob(*spec, po));
    if (plan.seconds <= budget) {
      std::printf("time budget %s: the estimate, %.0f s, fits; nothing scaled\n", f_.time_budget.c_str(), plan.seconds);
      return absl::OkStatus();
    }
    const double fixed = plan.seconds - plan.scalable_seconds;
    if (plan.scalable_seconds <= 0 || fixed >= 0.9 * budget) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--time-budget: %s is too short: the stages whose time no token budget sets take ~%.0f s alone",
          f_.time_budget, fixed));
    }
    const double factor = (budget - fixed) / plan.scalable_seconds;
    std::vector<std::string> changes = ScaleTokenBudgets(spec, factor);
    std::printf("time budget %s: the estimate, %.0f s, is over it; token budgets x%.2f (shapes kept):\n",
                f_.time_budget.c_str(), plan.seconds, factor);
    for (const std::string& c : changes) std::printf("  %s\n", c.c_str());
    std::fflush(stdout);
    return absl::OkStatus();
  }

  absl::StatusOr<int> Start(const v1::JobSpec& spec) {
    ASSIGN_OR_RETURN(LocalState state, OpenLocalState(f_.state_dir, !f_.resume, f_.resume ? "" : f_.storage));
    if (f_.resume) {
      ASSIGN_OR_RETURN(std::string storage, ReadFileToString(state.Path("storage"), 1 << 16));
      f_.storage = std::string(absl::StripAsciiWhitespace(storage));
    }
    // Leases of 3 s and a 2 s recovery grace: on one machine a worker that is gone is gone.
    ASSIGN_OR_RETURN(coordinator_, AttachOrStartCoordinator(state, 3, 2, SIGTERM));
    if (coordinator_.pid < 0) {
      return absl::FailedPreconditionError(absl::StrCat("--state-dir: another topiary run is using ", state.dir,
                                                        " (its coordinator answers at ", coordinator_.address, ")"));
    }
    children_.Add(coordinator_.pid, 5);
    ASSIGN_OR_RETURN(auto channel, rpc::MakeChannel({coordinator_.address, coordinator_.token, "", "", "", true}));
    stub_ = v1::JobService::NewStub(channel);
    ASSIGN_OR_RETURN(std::string id, f_.resume ? Resumed(state) : Submit(state, spec));
    if (f_.resume && f_.slots_per_worker <= 0) {
      v1::Job job;
      v1::GetJobRequest req;
      req.set_id(id);
      if (stub_->GetJob(Ctx().get(), req, &job).ok()) f_.slots_per_worker = SlotsNeeded(job.spec());
    }
    RETURN_IF_ERROR(StartWorkers(state));
    std::fprintf(stderr, "topiary run: job %s on %d worker(s) x %d slot(s); state in %s\n", id.c_str(), f_.workers,
                 std::max(1, f_.slots_per_worker), state.dir.c_str());
    std::thread signals([this, id] { OnSignals(id); });
    signals.detach();
    JobView view(stdout, isatty(STDOUT_FILENO));
    absl::StatusOr<v1::JobState> end = StreamJob(
        *stub_, [this] { return rpc::MakeContext(coordinator_.token); }, id, 0,
        [&](const v1::WatchJobResponse& r) { view.Show(r); });
    view.Close();
    if (!end.ok()) return end.status();
    PrintOutcome(id);
    return *end == v1::JOB_SUCCEEDED ? kExitOk : *end == v1::JOB_CANCELLED ? kExitJobCancelled : kExitJobFailed;
  }

  std::unique_ptr<grpc::ClientContext> Ctx() const {
    return rpc::MakeContext(coordinator_.token, std::chrono::seconds(30));
  }

  absl::StatusOr<std::string> Submit(const LocalState& state, const v1::JobSpec& spec) {
    if (absl::StatusOr<std::string> prior = ReadFileToString(state.Path("job"), 256); prior.ok()) {
      v1::GetJobRequest req;
      req.set_id(std::string(absl::StripAsciiWhitespace(*prior)));
      v1::Job job;
      if (stub_->GetJob(Ctx().get(), req, &job).ok() && job.state() != v1::JOB_SUCCEEDED &&
          job.state() != v1::JOB_FAILED && job.state() != v1::JOB_CANCELLED) {
        return absl::FailedPreconditionError(absl::StrCat("--state-dir: job ", job.id(),
                                                          " of an earlier run is unfinished in ", state.dir,
                                                          "; continue it with --resume, or use another --state-dir"));
      }
    }
    v1::CreateJobRequest req;
    *req.mutable_spec() = spec;
    v1::Job job;
    RETURN_IF_ERROR(rpc::FromGrpc(stub_->CreateJob(Ctx().get(), req, &job)));
    RETURN_IF_ERROR(WriteFileAtomically(state.Path("job"), job.id() + "\n"));
    return job.id();
  }

  absl::StatusOr<std::string> Resumed(const LocalState& state) {
    absl::StatusOr<std::string> prior = ReadFileToString(state.Path("job"), 256);
    if (!prior.ok()) return absl::NotFoundError(absl::StrCat("--resume: no job was started in ", state.dir));
    std::fprintf(stderr, "topiary run: resuming\n");
    return std::string(absl::StripAsciiWhitespace(*prior));
  }

  absl::Status StartWorkers(const LocalState& state) {
    const int64_t memory = TotalMemoryBytes();
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const int threads = std::max(1, cores / std::max(1, f_.workers * std::max(1, f_.slots_per_worker)));
    for (int i = 0; i < f_.workers; ++i) {
      std::vector<std::string> args = {BinaryDir() + "/topiary-worker",
                                       "--coordinator",
                                       coordinator_.address,
                                       "--slots",
                                       absl::StrCat(std::max(1, f_.slots_per_worker)),
                                       "--name",
                                       absl::StrCat("local-", i),
                                       "--work-dir",
                                       state.Path(absl::StrCat("workers/", i)),
                                       "--token-file",
                                       state.Path("worker-token"),
                                       "--device",
                                       f_.device,
                                       "--advertise-host",
                                       "127.0.0.1",
                                       "--threads-per-rank",
                                       absl::StrCat(threads),
                                       "--drain-seconds",
                                       absl::StrCat(f_.drain_seconds)};
      if (memory > 0) args.insert(args.end(), {"--memory", absl::StrCat(memory / f_.workers)});
      ChildOptions o;
      o.log = state.Path(absl::StrCat("logs/worker-", i, ".log"));
      o.death_signal = SIGTERM;
      ASSIGN_OR_RETURN(pid_t pid, SpawnChild(args, o));
      children_.Add(pid, f_.drain_seconds + 5);
    }
    return absl::OkStatus();
  }

  // First Ctrl-C: cancel the job (ranks stop at a step boundary); the watch
  // then ends with CANCELLED. A second: stop everything at once.
  void OnSignals(const std::string& id) {
    WaitForTerminationSignal();
    std::fprintf(stderr, "\ntopiary run: cancelling job %s (Ctrl-C again to stop at once)\n", id.c_str());
    v1::CancelJobRequest req;
    req.set_id(id);
    v1::Job job;
    grpc::Status st = stub_->CancelJob(Ctx().get(), req, &job);
    if (!st.ok()) std::fprintf(stderr, "topiary run: cancel: %s\n", st.error_message().c_str());
    WaitForTerminationSignal();
    std::fprintf(stderr, "topiary run: stopping\n");
    children_.StopAll();
    _exit(130);
  }

  void PrintOutcome(const std::string& id) {
    const std::string dir = absl::StrCat(f_.storage, "/jobs/", id);
    for (int i = 0; i < 100 && !fs::exists(dir + "/report.html"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // written by the coordinator as the job ends
    }
    v1::GetJobReportRequest req;
    req.set_id(id);
    v1::JobReport r;
    if (!stub_->GetJobReport(Ctx().get(), req, &r).ok()) return;
    nlohmann::json j = nlohmann::json::parse(r.report_json(), nullptr, false);
    if (j.is_discarded()) return;
    std::printf("\n%s", report::RenderSummary(j, r.report_dir()).c_str());
    if (!r.output_path().empty()) std::printf("  result: %s\n", r.output_path().c_str());
    std::fflush(stdout);
  }

  RunFlags f_;
  LocalCoordinator coordinator_;
  std::unique_ptr<v1::JobService::Stub> stub_;
  Children children_;
};

}  // namespace

void RegisterRunCommand(CLI::App& app, CommandRegistry& registry) {
  auto f = std::make_shared<RunFlags>();
  CLI::App* cmd = app.add_subcommand("run", "run a job spec on this machine: a coordinator, workers, live progress");
  cmd->add_option("spec", f->spec_file, "job spec (YAML or JSON); relative paths are relative to its directory");
  cmd->add_option("--workers", f->workers, "workers to start")->capture_default_str();
  cmd->add_option("--slots-per-worker", f->slots_per_worker,
                  "slots of each worker (default: the ranks the spec needs)");
  cmd->add_option("--state-dir", f->state_dir, "coordinator state, tokens and logs (default <storage>/.topiary)");
  cmd->add_option("--storage", f->storage, "storage root: every path of the spec must lie under it (default: .)");
  cmd->add_option("--device", f->device, "cpu | cuda")->capture_default_str();
  cmd->add_option("--drain-seconds", f->drain_seconds, "on stop, how long ranks get to checkpoint")
      ->capture_default_str();
  cmd->add_flag("--resume", f->resume, "continue the unfinished job of this state directory");
  cmd->add_flag("--dry-run", f->dry_run, "validate, resolve paths and print the plan; start nothing");
  cmd->add_option("--time-budget", f->time_budget,
                  "fit the job to this long (e.g. 9m): token budgets scale down from steps measured now, shapes stay");
  registry.Add(cmd, [f] { return Run(*f).Main(); });
}

}  // namespace topiary::cli
