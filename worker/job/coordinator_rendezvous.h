// dist::Rendezvous through the coordinator's RendezvousSet/Get, in the scope
// of one attempt of one task: the ranks of a multi-rank task meet there
// (Gloo's store keys on CPU, the NCCL unique id on GPU). Calls carry the
// worker's id and secret; the coordinator refuses keys of tasks that have no
// rank on this worker. TryGet asks with a short server-side wait, so
// WaitGet's polling costs one call per 100 ms at most. Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "common/rpc/channel.h"
#include "topiary/v1/worker_service.grpc.pb.h"
#include "worker/dist/rendezvous.h"

namespace topiary::job {

struct WorkerIdentity {
  std::string worker_id;
  std::string secret;
  std::string token;  // bearer token of the worker principal
};

std::unique_ptr<dist::Rendezvous> MakeCoordinatorRendezvous(std::shared_ptr<grpc::Channel> channel,
                                                            WorkerIdentity identity, std::string task_id, int attempt);

}  // namespace topiary::job
