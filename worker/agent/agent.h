// The worker agent behind `topiary-worker` (docs/design.md, "The worker
// agent"): it registers with the coordinator (getting a worker id and a
// secret), renews its lease with heartbeats that list the ranks it runs,
// long-polls for assignments and runs each rank as a child process
// (topiary-rank), so that a crash, abort or out-of-memory in a stage never
// takes the agent down. It forwards each rank's progress (at least every
// 10 s, and at once on milestones) and its completion, retrying while the
// coordinator is away: ranks keep running, the latest progress and every
// completion are held and delivered after a reconnect. Assignments it
// already runs are ignored; ranks the coordinator says are stale are
// killed; cancellation reaches a rank at its next step boundary. Drain
// (SIGTERM): no new work, every rank checkpoints and stops, the agent
// reports and returns within the drain time.
//
// Thread-safe; Run blocks until Drain has finished.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "common/rpc/channel.h"
#include "topiary/v1/worker_service.grpc.pb.h"
#include "worker/agent/rank_process.h"

namespace topiary::agent {

struct AgentOptions {
  rpc::ChannelOptions coordinator;                    // address, token, TLS
  std::string token_file, tls_ca, tls_cert, tls_key;  // passed on to ranks
  std::string name;
  int slots = 1;
  std::string device = "cpu";
  std::string work_dir;                    // assignments, secrets, rank logs
  std::string rank_binary;                 // topiary-rank
  std::string advertise_host;              // the address other ranks reach this worker's ranks at
  std::vector<std::string> storage_roots;  // empty: the coordinator's
  double drain_seconds = 60;
  double dist_timeout = 300;
  int threads_per_rank = 0;   // 0: cores / slots
  int64_t memory_bytes = -1;  // the machine's (or container's) memory; -1: measured
};

class Agent {
 public:
  explicit Agent(AgentOptions options);
  ~Agent();

  // Registers (retrying with backoff until it succeeds or Drain is called),
  // then serves until Drain; returns after every rank has stopped.
  absl::Status Run();
  // Asks Run to drain and return (callable from a signal-handling thread).
  void Drain();

 private:
  struct Rank {
    v1::Assignment assignment;
    std::unique_ptr<RankProcess> process;
    std::optional<v1::Progress> progress;  // latest, not yet sent
    bool milestone = false;
    bool fresh = false;  // progress not sent yet
    int64_t last_sent_ms = 0;
    bool done = false;                                  // the process has ended
    std::optional<v1::CompleteTaskRequest> completion;  // to deliver
    bool stale = false;                                 // the coordinator moved on: forget it
    bool told_stop = false;
  };

  absl::Status Register();
  void HeartbeatLoop();
  void PollLoop();
  void SendLoop();
  void StartRank(const v1::Assignment& a);
  void OnMessage(const std::string& key, const RankMessage& m);
  void OnExit(const std::string& key, int status, const std::string& tail);
  // Delivers one rank's pending progress or completion; false when the coordinator is unreachable.
  bool Deliver(const std::string& key);
  void StopRank(const std::string& key, const char* word);
  void ForgetAll(const std::string& why);
  std::unique_ptr<grpc::ClientContext> Ctx(int seconds) const;
  std::string Id() const;
  std::string Secret() const;
  int64_t RankMemoryBudget() const;

  AgentOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::string worker_id_, secret_, secret_file_;
  int64_t lease_ms_ = 10000;
  std::map<std::string, Rank> ranks_;  // "task#rank#attempt"
  std::set<std::string> finished_;     // recently finished ranks: a late re-sent assignment is ignored
  std::deque<std::string> finished_order_;
  std::atomic<bool> draining_{false}, exiting_{false};
  bool registered_ = false;
};

// The local address a connection to `address` (HOST:PORT) leaves from.
std::string LocalAddressFor(const std::string& address);

}  // namespace topiary::agent
