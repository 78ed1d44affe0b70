// Backups of the coordinator's store (docs/design.md, "The coordinator"):
// RocksDB checkpoints, taken while it serves, into a backup directory as
// backup-<UTC time>, the newest `keep` kept; and the restore of one into an
// empty state directory. A backup is the job registry (jobs, events,
// idempotency keys, workers); the jobs' files live on the shared storage.
// Thread-compatible.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/store/store.h"

namespace topiary::server {

// Writes a checkpoint of `store` to <backup_dir>/backup-YYYYmmddTHHMMSSZ (via
// a .partial- name renamed when complete: a crash leaves no backup that looks
// whole), then deletes all but the newest `keep` backups. Returns its path.
absl::StatusOr<std::string> WriteBackup(Store* store, const std::string& backup_dir, int keep, int64_t now_micros);

// The backups in `backup_dir`, oldest first.
std::vector<std::string> ListBackups(const std::string& backup_dir);

// Copies the backup `from` (a checkpoint directory) to `state_dir`, which
// must not exist or be empty, then opens it to check it is a store this
// build reads. Returns how many jobs it holds.
absl::StatusOr<int64_t> RestoreBackup(const std::string& from, const std::string& state_dir);

}  // namespace topiary::server
