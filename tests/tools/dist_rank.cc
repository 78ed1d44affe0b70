// One rank of the communicator tests (tests/unit/dist/communicator_test.cc):
//   dist_rank RANK WORLD RDZV_DIR SCENARIO TIMEOUT_MS
// Scenarios:
//   collectives  every collective, results checked exactly; exit 0 when right
//   die          the last rank exits after the first all-reduce; the others
//                must see their second all-reduce fail with UNAVAILABLE
//                (exit 0 when it does)
//   stall        the last rank joins, then sleeps through the collective; the
//                others must fail with DEADLINE_EXCEEDED (exit 0 when they do)
//   join         connect only (a rank the test never starts makes it time out)
#include <ATen/ATen.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "worker/dist/gloo_communicator.h"

using topiary::dist::Communicator;
using topiary::dist::ReduceOp;

namespace {

int Fail(const std::string& what) {
  std::printf("FAIL %s\n", what.c_str());
  return 1;
}

bool Equal(const at::Tensor& a, const at::Tensor& b) { return a.sizes() == b.sizes() && at::equal(a, b); }

int Collectives(Communicator& c) {
  const int r = c.rank(), W = c.world_size();
  at::Tensor t = at::full({5}, r + 1.0, at::kFloat);
  if (auto s = c.AllReduce(t); !s.ok()) return Fail(s.ToString());
  if (!Equal(t, at::full({5}, W * (W + 1) / 2.0, at::kFloat))) return Fail("all-reduce sum");
  at::Tensor m = at::full({3}, static_cast<double>(r), at::kDouble);
  if (auto s = c.AllReduce(m, ReduceOp::kMax); !s.ok()) return Fail(s.ToString());
  if (!Equal(m, at::full({3}, W - 1.0, at::kDouble))) return Fail("all-reduce max");
  at::Tensor a = at::full({2}, 2.0 * r, at::kFloat);
  if (auto s = c.AllReduce(a, ReduceOp::kAvg); !s.ok()) return Fail(s.ToString());
  if (!Equal(a, at::full({2}, W - 1.0, at::kFloat))) return Fail("all-reduce avg");
  // Reduce-scatter: rank r contributes arange(W*2) * (r+1); chunk k of the
  // sum is arange[2k, 2k+2) * W(W+1)/2.
  at::Tensor in = at::arange(W * 2, at::kFloat) * (r + 1);
  at::Tensor out = at::empty({2}, at::kFloat);
  if (auto s = c.ReduceScatter(in, out); !s.ok()) return Fail(s.ToString());
  if (!Equal(out, at::arange(2 * r, 2 * r + 2, at::kFloat) * (W * (W + 1) / 2.0))) return Fail("reduce-scatter");
  at::Tensor g_in = at::full({2, 3}, static_cast<double>(r), at::kFloat);
  at::Tensor g_out = at::empty({W * 2, 3}, at::kFloat);
  if (auto s = c.AllGather(g_in, g_out); !s.ok()) return Fail(s.ToString());
  for (int k = 0; k < W; ++k) {
    if (!Equal(g_out.narrow(0, 2 * k, 2), at::full({2, 3}, static_cast<double>(k), at::kFloat))) {
      return Fail("all-gather");
    }
  }
  at::Tensor b = r == W - 1 ? at::arange(4, at::kLong) : at::zeros({4}, at::kLong);
  if (auto s = c.Broadcast(b, W - 1); !s.ok()) return Fail(s.ToString());
  if (!Equal(b, at::arange(4, at::kLong))) return Fail("broadcast");
  if (auto s = c.Barrier(); !s.ok()) return Fail(s.ToString());
  at::Tensor bad = at::zeros({3}, at::kFloat);
  if (c.ReduceScatter(in, bad).ok()) return Fail("reduce-scatter accepted a wrong output shape");
  std::printf("ok rank %d of %d\n", r, W);
  return 0;
}

int ExpectPeerFailure(Communicator& c, bool last_rank_stalls, int timeout_ms) {
  const int r = c.rank(), W = c.world_size();
  at::Tensor t = at::ones({4}, at::kFloat);
  if (auto s = c.AllReduce(t); !s.ok()) return Fail("first all-reduce: " + s.ToString());
  if (r == W - 1) {
    std::fflush(stdout);
    if (!last_rank_stalls) _exit(3);                                         // dies without a goodbye
    std::this_thread::sleep_for(std::chrono::milliseconds(3 * timeout_ms));  // outlives their timeout
    _exit(0);
  }
  absl::Status s = c.AllReduce(t);
  if (s.ok()) return Fail("second all-reduce succeeded without the last rank");
  if (last_rank_stalls && !absl::IsDeadlineExceeded(s)) return Fail("expected DEADLINE_EXCEEDED: " + s.ToString());
  // A dead peer closed its sockets: the failure names a lost peer (what a
  // worker retries elsewhere), not a timeout or an internal error.
  if (!last_rank_stalls && !absl::IsUnavailable(s)) return Fail("expected UNAVAILABLE: " + s.ToString());
  // The communicator stays broken.
  if (c.Barrier().ok()) return Fail("barrier after a failure succeeded");
  std::printf("ok rank %d saw: %s\n", r, s.ToString().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) return Fail("usage: dist_rank RANK WORLD RDZV_DIR SCENARIO TIMEOUT_MS");
  topiary::dist::GlooOptions o;
  o.rank = std::atoi(argv[1]);
  o.world_size = std::atoi(argv[2]);
  const std::string scenario = argv[4];
  o.timeout = absl::Milliseconds(std::atoi(argv[5]));
  auto rdzv = topiary::dist::OpenFileRendezvous(argv[3]);
  if (!rdzv.ok()) return Fail(rdzv.status().ToString());
  auto comm = topiary::dist::CreateGlooCommunicator(rdzv->get(), o);
  if (!comm.ok()) {
    std::printf("connect failed: %s\n", comm.status().ToString().c_str());
    return scenario == "join" && absl::IsDeadlineExceeded(comm.status()) ? 4 : 1;
  }
  if (scenario == "collectives") return Collectives(**comm);
  if (scenario == "die") return ExpectPeerFailure(**comm, false, std::atoi(argv[5]));
  if (scenario == "stall") return ExpectPeerFailure(**comm, true, std::atoi(argv[5]));
  if (scenario == "join") return 0;
  return Fail("unknown scenario " + scenario);
}
