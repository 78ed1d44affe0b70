// Rendezvous: the small key/value store that ranks of one task use to find
// each other before they can talk (docs/design.md, "Distributed execution"). Rank 0 publishes (a
// Gloo address, an NCCL unique id) and the others read. Keys are scoped by the
// caller (the coordinator uses rdzv/<job>/<task>/<attempt>/), so a retried
// task never reads a stale value. Values are opaque bytes.
//
// Implementations: FileRendezvous (a directory on storage every rank sees,
// for local and test use); the coordinator's RPC-backed one lives in the
// agent. Implementations are thread-safe. Set never blocks on peers; Wait
// blocks until the key exists or the timeout passes.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace topiary::dist {

class Rendezvous {
 public:
  virtual ~Rendezvous() = default;
  // Publishes `value` under `key`; a later Set replaces it atomically.
  virtual absl::Status Set(absl::string_view key, absl::string_view value) = 0;
  // The value, or nullopt when nobody has set it yet. Never blocks on peers.
  virtual absl::StatusOr<std::optional<std::string>> TryGet(absl::string_view key) = 0;
};

// Polls TryGet (1 ms doubling to 50 ms) until the key exists. DEADLINE_EXCEEDED
// after `timeout`, naming the key.
absl::StatusOr<std::string> WaitGet(Rendezvous& rendezvous, absl::string_view key, absl::Duration timeout);

// One file per key under `dir` (created if missing); written to a temporary
// name and renamed, so readers see whole values only. Key bytes outside
// [A-Za-z0-9._-] are %XX-escaped. The directory must be fresh for each
// attempt of a task.
absl::StatusOr<std::unique_ptr<Rendezvous>> OpenFileRendezvous(const std::string& dir);

// Parses "file:DIR" (the only scheme for local runs).
absl::StatusOr<std::unique_ptr<Rendezvous>> OpenRendezvous(absl::string_view spec);

}  // namespace topiary::dist
