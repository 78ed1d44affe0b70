// A test's view of jobs on a real coordinator: submit a YAML spec, poll a
// job until a predicate holds, read every event, cancel, and start
// topiary-worker processes against it. Header-only; for tests.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/spec/spec_io.h"
#include "testing/coordinator_process.h"
#include "testing/processes.h"
#include "topiary/v1/job_service.grpc.pb.h"

namespace topiary::testing {

class JobClient {
 public:
  JobClient(Coordinator* coordinator, std::string token) : coordinator_(coordinator), token_(std::move(token)) {}

  std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 20) const {
    auto c = std::make_unique<grpc::ClientContext>();
    c->AddMetadata("authorization", "Bearer " + token_);
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return c;
  }
  // Submits a YAML spec; "" (with a failure) when it is refused.
  std::string Submit(const std::string& yaml) {
    auto spec = spec::ParseJobSpec(yaml);
    EXPECT_TRUE(spec.ok()) << spec.status();
    if (!spec.ok()) return "";
    v1::CreateJobRequest r;
    *r.mutable_spec() = *spec;
    v1::Job job;
    grpc::Status st = coordinator_->api().CreateJob(Ctx().get(), r, &job);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return job.id();
  }
  v1::Job Get(const std::string& id) {
    v1::GetJobRequest req;
    req.set_id(id);
    v1::Job job;
    grpc::Status st = coordinator_->api().GetJob(Ctx().get(), req, &job);
    if (!st.ok()) job.set_error("GetJob: " + st.error_message());
    return job;
  }
  // Polls every 50 ms until `pred` holds or `seconds` pass (a failure then).
  v1::Job WaitFor(const std::string& id, const std::function<bool(const v1::Job&)>& pred, int seconds = 120) {
    v1::Job job;
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < end) {
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
  // The stage named `name` is running with progress at step >= `step` (training).
  static std::function<bool(const v1::Job&)> AtStep(const std::string& name, int64_t step) {
    return [name, step](const v1::Job& j) {
      for (const v1::Stage& s : j.stages()) {
        if (s.name() == name && s.tasks_size() > 0 && s.tasks(0).state() == v1::TASK_RUNNING &&
            s.tasks(0).progress().phase() == "training" && s.tasks(0).progress().step() >= step) {
          return true;
        }
      }
      return Finished(j);
    };
  }
  // Every event the job has logged so far, through WatchJob. A finished
  // job's stream ends by itself; a running job's is closed once it has
  // delivered the event the job reported last (the stream would otherwise
  // follow the job to its end).
  std::vector<v1::Event> Events(const std::string& id) {
    const int64_t last = Get(id).last_event_seq();
    v1::WatchJobRequest req;
    req.set_id(id);
    auto ctx = Ctx();
    auto reader = coordinator_->api().WatchJob(ctx.get(), req);
    std::vector<v1::Event> out;
    v1::WatchJobResponse r;
    bool whole = false;
    while (reader->Read(&r)) {
      if (r.has_event()) out.push_back(r.event());
      if (!out.empty() && out.back().seq() >= last && !Finished(Get(id))) {
        whole = true;
        ctx->TryCancel();
        break;
      }
    }
    const grpc::Status st = reader->Finish();
    EXPECT_TRUE(st.ok() || (whole && st.error_code() == grpc::StatusCode::CANCELLED)) << st.error_message();
    return out;
  }
  grpc::Status Cancel(const std::string& id, v1::Job* out) {
    v1::CancelJobRequest req;
    req.set_id(id);
    return coordinator_->api().CancelJob(Ctx().get(), req, out);
  }

 private:
  Coordinator* coordinator_;
  std::string token_;
};

// topiary-worker processes, killed (SIGKILL) when the object dies.
class Workers {
 public:
  explicit Workers(std::string dir) : dir_(std::move(dir)) {}
  ~Workers() {
    for (pid_t p : pids_) kill(p, SIGKILL), waitpid(p, nullptr, 0);
  }
  // Starts a worker; its log is <dir>/<name>.log and its work dir <dir>/<name>.
  pid_t Start(const std::string& name, int slots, int port, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {BinDir() + "/topiary-worker",
                                     "--coordinator",
                                     "127.0.0.1:" + std::to_string(port),
                                     "--slots",
                                     std::to_string(slots),
                                     "--name",
                                     name,
                                     "--work-dir",
                                     dir_ + "/" + name,
                                     "--token-file",
                                     dir_ + "/worker-token",
                                     "--threads-per-rank",
                                     "1",
                                     "--drain-seconds",
                                     "20",
                                     "--advertise-host",
                                     "127.0.0.1"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_t p = SpawnProcess(args, dir_ + "/" + name + ".log");
    pids_.push_back(p);
    return p;
  }
  // Sends `sig` and waits for the exit code (-signal when killed).
  int Stop(pid_t pid, int sig) {
    kill(pid, sig);
    int status = 0;
    waitpid(pid, &status, 0);
    pids_.erase(std::remove(pids_.begin(), pids_.end(), pid), pids_.end());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
  std::string Log(const std::string& name) const {
    return ReadFileToString(dir_ + "/" + name + ".log", 1 << 22).value_or("");
  }

 private:
  std::string dir_;
  std::vector<pid_t> pids_;
};

}  // namespace topiary::testing
