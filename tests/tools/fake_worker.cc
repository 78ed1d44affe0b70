// A stand-in worker speaking topiary.v1.WorkerService, for the scheduler's
// integration tests: it registers, heartbeats, long-polls for assignments
// and "runs" each rank as --steps progress reports --step-ms apart, then
// completes it (failing attempts up to --fail-attempts). It stops a rank
// when told to (heartbeat or progress answer) and reports it as cancelled.
//
//   fake_worker --server HOST:PORT [--token T] [--name N] [--slots S]
//               [--steps 5] [--step-ms 100] [--fail-attempts 0]
// Every rank reports {"loss": 3.0 + 0.1 * ((task_index + 3) * 5 mod 7)} as its
// result, so a search stage's best probe is index 4.
// Prints one line per event: "registered ID", "start TASK rank R attempt A",
// "done TASK rank R", "fail TASK rank R", "cancelled TASK rank R".
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "topiary/v1/worker_service.grpc.pb.h"

namespace {

using namespace topiary;

struct Flags {
  std::string server, token, name = "fake";
  int slots = 1, steps = 5, step_ms = 100, fail_attempts = 0;
};

std::mutex out_mu;
void Say(const std::string& line) {
  std::lock_guard<std::mutex> lock(out_mu);
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

class Worker {
 public:
  explicit Worker(Flags f) : f_(std::move(f)) {
    grpc::ChannelArguments args;  // reconnect quickly after a coordinator restart (a real worker does the same)
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
    stub_ = v1::WorkerService::NewStub(grpc::CreateCustomChannel(f_.server, grpc::InsecureChannelCredentials(), args));
  }
  std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 10) {
    auto c = std::make_unique<grpc::ClientContext>();
    if (!f_.token.empty()) c->AddMetadata("authorization", "Bearer " + f_.token);
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return c;
  }
  bool Register() {
    v1::RegisterWorkerRequest req;
    req.set_name(f_.name);
    req.set_slots(f_.slots);
    req.set_device_kind("cpu");
    v1::RegisterWorkerResponse resp;
    grpc::Status st = stub_->RegisterWorker(Ctx().get(), req, &resp);
    if (!st.ok()) {
      Say("register failed: " + st.error_message());
      return false;
    }
    std::lock_guard<std::mutex> lock(mu_);
    id_ = resp.worker_id();
    secret_ = resp.secret();
    Say("registered " + id_);
    return true;
  }
  void Run() {
    std::thread hb([this] {
      while (true) {
        v1::HeartbeatRequest req;
        {
          std::lock_guard<std::mutex> lock(mu_);
          req.set_worker_id(id_);
          req.set_secret(secret_);
          for (const v1::RankRef& r : running_) *req.add_running() = r;
        }
        v1::HeartbeatResponse resp;
        grpc::Status st = stub_->Heartbeat(Ctx(2).get(), req, &resp);
        if (st.ok()) {
          std::lock_guard<std::mutex> lock(mu_);
          for (const std::string& t : resp.cancel_task_ids()) cancel_.insert(t);
          for (const v1::RankRef& r : resp.stop()) cancel_.insert(r.task_id());
        } else if (getenv("FAKE_WORKER_DEBUG")) {
          Say("heartbeat: " + std::to_string(st.error_code()) + " " + st.error_message());
        }
        if (st.error_code() == grpc::StatusCode::NOT_FOUND) {
          Say("lost: " + st.error_message());
          Register();  // declared lost: come back as a new worker
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    });
    hb.detach();
    std::set<std::string> seen;
    while (true) {
      v1::PollAssignmentsRequest req;
      req.set_worker_id(Id());
      req.set_secret(Secret());
      req.set_wait_micros(1'000'000);
      v1::PollAssignmentsResponse resp;
      if (!stub_->PollAssignments(Ctx(5).get(), req, &resp).ok()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        continue;
      }
      for (const v1::Assignment& a : resp.assignments()) {
        const std::string key = a.task_id() + "#" + std::to_string(a.attempt()) + "#" + std::to_string(a.rank());
        if (!seen.insert(key).second) continue;  // a redelivery after a coordinator restart
        std::thread([this, a] { RunRank(a); }).detach();
      }
    }
  }

 private:
  std::string Id() {
    std::lock_guard<std::mutex> lock(mu_);
    return id_;
  }
  std::string Secret() {
    std::lock_guard<std::mutex> lock(mu_);
    return secret_;
  }
  void RunRank(const v1::Assignment& a) {
    const std::string who = a.task_id() + " rank " + std::to_string(a.rank());
    const std::string wid = Id();
    std::string inputs;
    for (const auto& [stage, result] : a.stage_results()) inputs += " " + stage + "=" + result;
    Say("start " + who + " attempt " + std::to_string(a.attempt()) + (inputs.empty() ? "" : " inputs" + inputs));
    const std::string secret = Secret();
    v1::RankRef me;
    me.set_task_id(a.task_id());
    me.set_rank(a.rank());
    me.set_attempt(a.attempt());
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_.push_back(me);
    }
    bool cancelled = false;
    for (int step = 1; step <= f_.steps && !cancelled; ++step) {
      std::this_thread::sleep_for(std::chrono::milliseconds(f_.step_ms));
      v1::ReportProgressRequest req;
      req.set_worker_id(wid);
      req.set_task_id(a.task_id());
      req.set_rank(a.rank());
      req.set_secret(secret);
      req.set_attempt(a.attempt());
      req.mutable_progress()->set_step(step);
      req.mutable_progress()->set_total_steps(f_.steps);
      req.mutable_progress()->set_tokens(step * 1000);
      req.mutable_progress()->set_loss(5.0 / step);
      (*req.mutable_metrics())["loss"] = 5.0 / step;
      (*req.mutable_metrics())["tokens"] = step * 1000;
      (*req.mutable_metrics())["tokens_per_second"] = 1000.0 / (f_.step_ms / 1000.0);
      (*req.mutable_metrics())["mfu"] = 0.5;
      v1::ReportProgressResponse resp;
      if (stub_->ReportProgress(Ctx().get(), req, &resp).ok() && resp.cancel()) cancelled = true;
      std::lock_guard<std::mutex> lock(mu_);
      if (cancel_.count(a.task_id())) cancelled = true;
    }
    v1::CompleteTaskRequest done;
    done.set_worker_id(wid);
    done.set_task_id(a.task_id());
    done.set_rank(a.rank());
    done.set_secret(secret);
    done.set_attempt(a.attempt());
    const bool fail = !cancelled && a.attempt() <= f_.fail_attempts;
    done.set_ok(!cancelled && !fail);
    // A search probe reports its candidate's loss: 3.0 + 0.1 * ((index + 3) * 5 mod 7), lowest at index 4.
    done.set_result_json("{\"loss\": " + std::to_string(3.0 + 0.1 * (((a.task_index() + 3) * 5) % 7)) + "}");
    if (cancelled) done.set_error("cancelled");
    if (fail) done.set_error("injected failure on attempt " + std::to_string(a.attempt()));
    v1::CompleteTaskResponse resp;
    for (int i = 0; i < 50; ++i) {
      grpc::Status st = stub_->CompleteTask(Ctx().get(), done, &resp);
      if (st.ok() || st.error_code() == grpc::StatusCode::FAILED_PRECONDITION) break;  // taken, or stale
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the coordinator may be restarting
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = running_.begin(); it != running_.end(); ++it) {
        if (it->task_id() == me.task_id() && it->rank() == me.rank() && it->attempt() == me.attempt()) {
          running_.erase(it);
          break;
        }
      }
    }
    Say((cancelled ? "cancelled " : fail ? "fail " : "done ") + who);
  }

  Flags f_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::string id_, secret_;
  std::mutex mu_;
  std::set<std::string> cancel_;
  std::vector<v1::RankRef> running_;
};

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--server")
      f.server = v;
    else if (k == "--token")
      f.token = v;
    else if (k == "--name")
      f.name = v;
    else if (k == "--slots")
      f.slots = std::atoi(v.c_str());
    else if (k == "--steps")
      f.steps = std::atoi(v.c_str());
    else if (k == "--step-ms")
      f.step_ms = std::atoi(v.c_str());
    else if (k == "--fail-attempts")
      f.fail_attempts = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "fake_worker: unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  Worker w(f);
  for (int i = 0; i < 100 && !w.Register(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  w.Run();
}
