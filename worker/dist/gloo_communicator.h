// The Gloo backend of Communicator (CPU tensors), built on libtorch's c10d
// ProcessGroupGloo with our Rendezvous as its store. Ranks connect over TCP
// on `hostname` (an address of this machine that peers can reach; loopback
// for one machine). Every collective and the initial connection obey
// `timeout`. Construction blocks until all ranks have joined.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/dist/communicator.h"
#include "worker/dist/rendezvous.h"

namespace topiary::dist {

struct GlooOptions {
  int rank = 0;
  int world_size = 1;
  std::string hostname = "127.0.0.1";  // where this rank listens
  absl::Duration timeout = absl::Seconds(300);
};

// `rendezvous` must outlive the communicator.
absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(Rendezvous* rendezvous,
                                                                     const GlooOptions& options);

}  // namespace topiary::dist
