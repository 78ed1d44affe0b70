// `coordinator_bench --fleet`: a real topiary-coordinator (--sync true) under
// a simulated fleet over gRPC on loopback. Each simulated worker registers
// with 8 slots, is placed one 8-rank job (every slot busy), heartbeats every
// 3 s listing its ranks, polls for assignments after each heartbeat (a
// short poll, where topiary-worker long-polls: the same calls, fewer held
// open), and
// reports progress for each of its ranks every 10 s; meanwhile users create
// jobs (which queue: the fleet is full), list jobs and watch one. Fleet sizes
// are tried in turn, each against a fresh coordinator; for each: heartbeat,
// poll, progress and list p50/p99, leases lost, the coordinator's CPU (cores)
// and bytes written (per hour per rank). The largest fleet holding heartbeat
// and progress p99 <= 100 ms with no lease lost is reported. The simulated
// workers share --threads client threads and connections, and this
// machine's cores with the coordinator.
#pragma once

#include <string>
#include <vector>

namespace topiary::bench {

// The p-quantile (0..1) of v; 0 when v is empty.
double Percentile(std::vector<double> v, double p);

// A topiary-coordinator started for a bench on a free loopback port, its
// state under dir; `address` is empty when it did not come up.
struct Coordinator {
  int pid = -1;
  std::string address;
};
Coordinator StartCoordinator(const std::string& binary, const std::string& dir,
                             const std::vector<std::string>& extra_flags = {});

struct FleetOptions {
  std::string coordinator;  // the topiary-coordinator binary
  std::vector<int> sizes;   // workers, tried in order
  double seconds = 60;      // measured per size, after every job is placed
  int threads = 32;         // client threads driving the simulated workers
};

// Prints one SUMMARY line; returns the process exit code.
int RunFleet(const FleetOptions& options);

}  // namespace topiary::bench
