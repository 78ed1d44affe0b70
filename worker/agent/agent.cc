#include "worker/agent/agent.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/process.h"
#include "common/status_macros.h"

namespace topiary::agent {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

std::string Key(const std::string& task, int rank, int attempt) { return absl::StrCat(task, "#", rank, "#", attempt); }

std::string Sanitize(const std::string& s) {
  std::string out;
  for (char c : s) out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' ? c : '_');
  return out;
}

bool Permanent(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAUTHENTICATED || s.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
         s.error_code() == grpc::StatusCode::INVALID_ARGUMENT;
}

}  // namespace

std::string LocalAddressFor(const std::string& address) {
  std::string host = address, port = "0";
  if (!address.empty() && address[0] == '[') {
    const size_t close = address.find(']');
    host = address.substr(1, close - 1);
    if (close + 2 < address.size()) port = address.substr(close + 2);
  } else if (const size_t colon = address.rfind(':'); colon != std::string::npos) {
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) return "127.0.0.1";
  std::string out = "127.0.0.1";
  int fd = socket(res->ai_family, SOCK_DGRAM, 0);
  if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
    sockaddr_storage local{};
    socklen_t len = sizeof(local);
    char buf[INET6_ADDRSTRLEN] = {0};
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      const void* a = local.ss_family == AF_INET6
                          ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr)
                          : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr);
      if (inet_ntop(local.ss_family, a, buf, sizeof(buf)) != nullptr) out = buf;
    }
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(res);
  return out;
}

Agent::Agent(AgentOptions options) : options_(std::move(options)) {}

Agent::~Agent() {
  Drain();
  std::map<std::string, Rank> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(ranks_);
  }
  left.clear();  // kills and joins outside the lock
}

std::string Agent::Id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return worker_id_;
}

std::string Agent::Secret() const {
  std::lock_guard<std::mutex> lock(mu_);
  return secret_;
}

std::unique_ptr<grpc::ClientContext> Agent::Ctx(int seconds) const {
  return rpc::MakeContext(options_.coordinator.token, std::chrono::seconds(seconds));
}

absl::Status Agent::Register() {
  v1::RegisterWorkerRequest req;
  req.set_name(options_.name);
  req.set_slots(options_.slots);
  req.set_device_kind(options_.device);
  req.set_memory_bytes(std::max<int64_t>(0, options_.memory_bytes > 0 ? options_.memory_bytes : TotalMemoryBytes()));
  v1::RegisterWorkerResponse resp;
  grpc::Status st = stub_->RegisterWorker(Ctx(10).get(), req, &resp);
  if (!st.ok()) return rpc::FromGrpc(st);
  const std::string secret_file = absl::StrCat(options_.work_dir, "/secret-", Sanitize(resp.worker_id()));
  RETURN_IF_ERROR(WriteFileAtomically(secret_file, resp.secret() + "\n"));
  chmod(secret_file.c_str(), 0600);
  std::lock_guard<std::mutex> lock(mu_);
  if (!secret_file_.empty() && secret_file_ != secret_file) (void)RemoveAll(secret_file_);
  worker_id_ = resp.worker_id();
  secret_ = resp.secret();
  secret_file_ = secret_file;
  lease_ms_ = std::max<int64_t>(300, resp.lease_micros() / 1000);
  registered_ = true;
  log::Info(absl::StrCat("topiary-worker: registered as ", worker_id_, " (", options_.slots, " slots, lease ",
                         lease_ms_ / 1000.0, "s)"));
  return absl::OkStatus();
}

absl::Status Agent::Run() {
  RETURN_IF_ERROR(MakeDirs(options_.work_dir + "/ranks"));
  chmod(options_.work_dir.c_str(), 0700);  // secrets and assignments live here
  ASSIGN_OR_RETURN(channel_, rpc::MakeChannel(options_.coordinator));
  stub_ = v1::WorkerService::NewStub(channel_);
  for (int backoff_ms = 200; !draining_.load();) {
    absl::Status st = Register();
    if (st.ok()) break;
    if (absl::IsUnauthenticated(st) || absl::IsPermissionDenied(st) || absl::IsInvalidArgument(st)) {
      return absl::Status(st.code(), absl::StrCat("registration refused: ", st.message()));
    }
    log::Warn(absl::StrCat("topiary-worker: cannot register with ", options_.coordinator.address, " (", st.message(),
                           "); retrying in ", backoff_ms, " ms"));
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_for(lock, std::chrono::milliseconds(backoff_ms), [this] { return draining_.load(); });
    backoff_ms = std::min(backoff_ms * 2, 5000);
  }
  std::thread heartbeat([this] { HeartbeatLoop(); });
  std::thread poll([this] { PollLoop(); });  // also the thread that starts ranks: it lives until the end
  std::thread send([this] { SendLoop(); });
  {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait(lock, [this] { return draining_.load(); });
  }
  // Drain: the coordinator hears first (it places nothing more here), then every rank writes a
  // checkpoint at its next step boundary and stops, and the completions go out.
  log::Info(absl::StrCat("topiary-worker: draining for up to ", options_.drain_seconds, "s"));
  {
    v1::HeartbeatRequest req;
    req.set_worker_id(Id());
    req.set_secret(Secret());
    req.set_draining(true);
    v1::HeartbeatResponse resp;
    grpc::Status st = stub_->Heartbeat(Ctx(2).get(), req, &resp);
    if (!st.ok()) log::Warn(absl::StrCat("topiary-worker: could not announce the drain: ", st.error_message()));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [key, r] : ranks_) {
      if (!r.done && r.process) r.process->Tell("drain"), r.told_stop = true;
    }
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(options_.drain_seconds * 1000));
  {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_until(lock, deadline - std::chrono::milliseconds(500), [this] { return ranks_.empty(); });
    for (auto& [key, r] : ranks_) {
      if (!r.done && r.process) r.process->Kill();  // past the drain time
    }
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_until(lock, deadline, [this] { return ranks_.empty(); });
  }
  exiting_.store(true);
  changed_.notify_all();
  send.join();
  heartbeat.join();
  poll.join();
  log::Info("topiary-worker: stopped");
  return absl::OkStatus();
}

void Agent::Drain() {
  draining_.store(true);
  changed_.notify_all();
}

void Agent::HeartbeatLoop() {
  bool warned = false;
  while (!exiting_.load()) {
    v1::HeartbeatRequest req;
    int64_t lease_ms;
    {
      std::lock_guard<std::mutex> lock(mu_);
      req.set_worker_id(worker_id_);
      req.set_secret(secret_);
      req.set_draining(draining_.load());
      for (const auto& [key, r] : ranks_) {
        if (r.done || r.stale) continue;
        v1::RankRef* ref = req.add_running();
        ref->set_task_id(r.assignment.task_id());
        ref->set_rank(r.assignment.rank());
        ref->set_attempt(r.assignment.attempt());
      }
      lease_ms = lease_ms_;
    }
    v1::HeartbeatResponse resp;
    grpc::Status st = stub_->Heartbeat(Ctx(std::max<int64_t>(1, lease_ms / 1000)).get(), req, &resp);
    if (st.ok()) {
      if (warned) log::Info("topiary-worker: the coordinator is back");
      warned = false;
      for (const std::string& task : resp.cancel_task_ids()) {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& [key, r] : ranks_) {
          if (r.assignment.task_id() == task && !r.done && !r.told_stop && r.process) {
            r.process->Tell("cancel");
            r.told_stop = true;
          }
        }
      }
      for (const v1::RankRef& ref : resp.stop()) StopRank(Key(ref.task_id(), ref.rank(), ref.attempt()), nullptr);
    } else if (st.error_code() == grpc::StatusCode::NOT_FOUND ||
               st.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      // The coordinator does not know this worker (its lease ran out): its ranks' tasks moved on.
      log::Warn(absl::StrCat("topiary-worker: ", st.error_message(), "; registering again"));
      ForgetAll("the coordinator declared this worker lost");
      if (!draining_.load()) {
        absl::Status r = Register();
        if (!r.ok()) log::Warn(absl::StrCat("topiary-worker: register: ", r.message()));
      }
    } else if (!warned) {
      log::Warn(absl::StrCat("topiary-worker: heartbeat: ", st.error_message(),
                             " (ranks keep running; progress and completions are held)"));
      warned = true;
    }
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_for(lock, std::chrono::milliseconds(std::clamp<int64_t>(lease_ms / 3, 100, 3000)),
                      [this] { return exiting_.load(); });
  }
}

void Agent::PollLoop() {
  while (!exiting_.load()) {
    if (draining_.load()) {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait_for(lock, std::chrono::milliseconds(200), [this] { return exiting_.load(); });
      continue;
    }
    v1::PollAssignmentsRequest req;
    req.set_worker_id(Id());
    req.set_secret(Secret());
    req.set_wait_micros(5'000'000);
    v1::PollAssignmentsResponse resp;
    grpc::Status st = stub_->PollAssignments(Ctx(15).get(), req, &resp);
    if (!st.ok()) {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait_for(lock, std::chrono::milliseconds(Permanent(st) ? 2000 : 300),
                        [this] { return exiting_.load(); });
      continue;
    }
    for (const v1::Assignment& a : resp.assignments()) {
      if (draining_.load()) break;
      StartRank(a);
    }
  }
}

int64_t Agent::RankMemoryBudget() const {
  const int64_t total = options_.memory_bytes > 0 ? options_.memory_bytes : TotalMemoryBytes();
  const int64_t available = AvailableMemoryBytes();
  if (total <= 0) return available;
  const int64_t share = total / std::max(1, options_.slots);
  return available > 0 ? std::min(share, available) : share;
}

void Agent::StartRank(const v1::Assignment& a) {
  const std::string key = Key(a.task_id(), a.rank(), a.attempt());
  std::string id, secret_file;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ranks_.count(key) || finished_.count(key)) return;  // a re-sent assignment
    Rank& r = ranks_[key];
    r.assignment = a;
    id = worker_id_;
    secret_file = secret_file_;
  }
  const std::string base = absl::StrCat(Sanitize(a.task_id()), "-a", a.attempt(), "-r", a.rank());
  const std::string dir = absl::StrCat(options_.work_dir, "/ranks/", base);
  const int slots = std::max(1, a.spec().resources().slots_per_rank());
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = options_.threads_per_rank > 0 ? options_.threads_per_rank
                                                    : std::max(1, cores * slots / std::max(1, options_.slots));
  std::vector<std::string> argv = {options_.rank_binary,
                                   "--assignment",
                                   dir + "/assignment.pb",
                                   "--coordinator",
                                   options_.coordinator.address,
                                   "--worker-id",
                                   id,
                                   "--secret-file",
                                   secret_file,
                                   "--advertise-host",
                                   options_.advertise_host,
                                   "--device",
                                   options_.device,
                                   "--memory-budget",
                                   absl::StrCat(RankMemoryBudget() * slots),
                                   "--dist-timeout",
                                   absl::StrCat(options_.dist_timeout),
                                   "--threads",
                                   absl::StrCat(threads)};
  if (!options_.token_file.empty()) argv.insert(argv.end(), {"--token-file", options_.token_file});
  if (!options_.tls_ca.empty()) argv.insert(argv.end(), {"--tls-ca", options_.tls_ca});
  if (!options_.tls_cert.empty())
    argv.insert(argv.end(), {"--tls-cert", options_.tls_cert, "--tls-key", options_.tls_key});
  for (const std::string& root : options_.storage_roots) argv.insert(argv.end(), {"--storage-root", root});
  absl::Status st = MakeDirs(dir);
  if (st.ok()) st = WriteFileAtomically(dir + "/assignment.pb", a.SerializeAsString(), /*durable=*/false);
  absl::StatusOr<std::unique_ptr<RankProcess>> p;
  if (st.ok()) {
    RankProcess::Callbacks cb;
    cb.message = [this, key](const RankMessage& m) { OnMessage(key, m); };
    cb.exited = [this, key](int status, const std::string& tail) { OnExit(key, status, tail); };
    p = RankProcess::Start(argv, dir + "/rank.log", std::move(cb));
    st = p.status();
  }
  log::Info(absl::StrCat("topiary-worker: ", st.ok() ? "started " : "cannot start ", a.task_id(), " rank ", a.rank(),
                         " of ", a.world_size(), " (attempt ", a.attempt(), ")", st.ok() ? "" : ": ",
                         st.ok() ? "" : st.message()));
  std::lock_guard<std::mutex> lock(mu_);
  Rank& r = ranks_[key];
  if (st.ok()) {
    r.process = *std::move(p);
    if (draining_.load()) r.process->Tell("drain"), r.told_stop = true;
    return;
  }
  r.done = true;
  v1::CompleteTaskRequest c;
  c.set_ok(false);
  c.set_error(absl::StrCat("cannot start the rank process: ", st.message()));
  c.set_failure_kind(v1::FAILURE_INFRASTRUCTURE);
  r.completion = c;
  changed_.notify_all();
}

void Agent::OnMessage(const std::string& key, const RankMessage& m) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ranks_.find(key);
  if (it == ranks_.end()) return;
  Rank& r = it->second;
  if (m.type == RankMessage::Type::kProgress) {
    r.progress = m.progress;
    r.milestone = r.milestone || m.milestone;
    r.fresh = true;
  } else if (!r.completion.has_value()) {
    v1::CompleteTaskRequest c;
    c.set_ok(m.type == RankMessage::Type::kResult);
    if (c.ok()) {
      c.set_result_json(m.result.dump());
    } else {
      const bool stopped = m.failure == "cancelled";
      c.set_error(stopped && draining_.load() ? absl::StrCat("worker ", options_.name, " drained: ", m.message)
                                              : m.message);
      c.set_failure_kind(m.failure == "task" ? v1::FAILURE_TASK : v1::FAILURE_INFRASTRUCTURE);
    }
    r.completion = c;
  }
  changed_.notify_all();
}

void Agent::OnExit(const std::string& key, int status, const std::string& tail) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ranks_.find(key);
  if (it == ranks_.end()) return;
  Rank& r = it->second;
  r.done = true;
  if (!r.completion.has_value() && !r.stale) {
    v1::CompleteTaskRequest c;
    c.set_ok(false);
    if (draining_.load() && r.told_stop) {
      c.set_error(absl::StrCat("worker ", options_.name, " drained: the rank did not stop in time"));
      c.set_failure_kind(v1::FAILURE_INFRASTRUCTURE);
    } else {
      c.set_error(absl::StrCat("the rank process ", DescribeWaitStatus(status),
                               tail.empty() ? "" : absl::StrCat("; the end of its log:\n", tail)));
      c.set_failure_kind(v1::FAILURE_TASK);
    }
    r.completion = c;
  }
  log::Info(absl::StrCat("topiary-worker: ", r.assignment.task_id(), " rank ", r.assignment.rank(), " ",
                         DescribeWaitStatus(status)));
  changed_.notify_all();
}

void Agent::StopRank(const std::string& key, const char* word) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ranks_.find(key);
  if (it == ranks_.end()) return;
  Rank& r = it->second;
  if (word != nullptr) {
    if (r.process && !r.told_stop) r.process->Tell(word), r.told_stop = true;
    return;
  }
  r.stale = true;  // the coordinator moved on: kill it, report nothing
  r.completion.reset();
  if (r.process) r.process->Kill();
  log::Warn(absl::StrCat("topiary-worker: ", r.assignment.task_id(), " rank ", r.assignment.rank(), " attempt ",
                         r.assignment.attempt(), " is stale; stopped"));
  changed_.notify_all();
}

void Agent::ForgetAll(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [key, r] : ranks_) {
    if (r.stale) continue;
    r.stale = true;
    r.completion.reset();
    if (r.process) r.process->Kill();
    log::Warn(
        absl::StrCat("topiary-worker: stopping ", r.assignment.task_id(), " rank ", r.assignment.rank(), ": ", why));
  }
  changed_.notify_all();
}

bool Agent::Deliver(const std::string& key) {
  std::optional<v1::CompleteTaskRequest> completion;
  std::optional<v1::ReportProgressRequest> progress;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = ranks_.find(key);
    if (it == ranks_.end()) return true;
    Rank& r = it->second;
    const v1::Assignment& a = r.assignment;
    if (r.stale) return true;
    const int64_t now = NowMs();
    if (r.completion.has_value()) {
      completion = *r.completion;
      completion->set_worker_id(worker_id_);
      completion->set_secret(secret_);
      completion->set_task_id(a.task_id());
      completion->set_rank(a.rank());
      completion->set_attempt(a.attempt());
    } else if (r.progress.has_value() && !r.done &&
               ((r.fresh && (r.milestone || now - r.last_sent_ms >= 1000)) || now - r.last_sent_ms >= 10000)) {
      // New progress at most once a second (milestones at once), and the latest again every 10 s.
      progress.emplace();
      progress->set_worker_id(worker_id_);
      progress->set_secret(secret_);
      progress->set_task_id(a.task_id());
      progress->set_rank(a.rank());
      progress->set_attempt(a.attempt());
      *progress->mutable_progress() = *r.progress;
      const v1::Progress& p = *r.progress;
      if (p.phase() == "training") {
        (*progress->mutable_metrics())["loss"] = p.loss();
        (*progress->mutable_metrics())["tokens"] = static_cast<double>(p.tokens());
        (*progress->mutable_metrics())["tokens_per_second"] = p.tokens_per_second();
        if (p.mfu() > 0) (*progress->mutable_metrics())["mfu"] = p.mfu();
      }
    }
  }
  if (completion.has_value()) {
    v1::CompleteTaskResponse resp;
    grpc::Status st = stub_->CompleteTask(Ctx(10).get(), *completion, &resp);
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE || st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return false;  // held until the coordinator is back
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = ranks_.find(key);
    if (it == ranks_.end()) return true;
    if (st.error_code() == grpc::StatusCode::INVALID_ARGUMENT && completion->ok()) {
      v1::CompleteTaskRequest c;  // the result itself was refused: report that as the rank's failure
      c.set_ok(false);
      c.set_error(absl::StrCat("the coordinator refused the rank's result: ", st.error_message()));
      c.set_failure_kind(v1::FAILURE_TASK);
      it->second.completion = c;
      return true;
    }
    if (!st.ok()) {
      log::Warn(absl::StrCat("topiary-worker: completion of ", completion->task_id(), " rank ", completion->rank(),
                             " not taken: ", st.error_message()));
    }
    it->second.completion.reset();
    it->second.stale = true;  // delivered (or refused for good): nothing more to say about it
    changed_.notify_all();
    return true;
  }
  if (!progress.has_value()) return true;
  v1::ReportProgressResponse resp;
  grpc::Status st = stub_->ReportProgress(Ctx(10).get(), *progress, &resp);
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE || st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return false;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = ranks_.find(key);
    if (it != ranks_.end()) {
      it->second.last_sent_ms = NowMs();
      it->second.milestone = false;
      it->second.fresh = false;
    }
  }
  if (st.ok() && resp.cancel()) StopRank(key, "cancel");
  if (st.error_code() == grpc::StatusCode::FAILED_PRECONDITION) StopRank(key, nullptr);
  return true;
}

void Agent::SendLoop() {
  while (!exiting_.load()) {
    std::vector<std::string> keys;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [key, r] : ranks_) keys.push_back(key);
    }
    for (const std::string& key : keys) {
      if (!Deliver(key)) break;  // the coordinator is unreachable: try again shortly
    }
    std::vector<std::unique_ptr<RankProcess>> finished;  // destroyed outside the lock (joins readers)
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = ranks_.begin(); it != ranks_.end();) {
        if (it->second.done && it->second.stale && !it->second.completion.has_value()) {
          finished.push_back(std::move(it->second.process));
          finished_.insert(it->first);
          finished_order_.push_back(it->first);
          if (finished_order_.size() > 10000) finished_.erase(finished_order_.front()), finished_order_.pop_front();
          it = ranks_.erase(it);
        } else {
          ++it;
        }
      }
      if (!finished.empty()) changed_.notify_all();
    }
    finished.clear();
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_for(lock, std::chrono::milliseconds(100), [this] { return exiting_.load(); });
  }
}

}  // namespace topiary::agent
