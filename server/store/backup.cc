#include "server/store/backup.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"

namespace topiary::server {
namespace fs = std::filesystem;

std::vector<std::string> ListBackups(const std::string& backup_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(backup_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("backup-", 0) == 0 && e.is_directory(ec)) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());  // the names sort by time
  return out;
}

absl::StatusOr<std::string> WriteBackup(Store* store, const std::string& backup_dir, int keep, int64_t now_micros) {
  std::error_code ec;
  fs::create_directories(backup_dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("backup: ", backup_dir, ": ", ec.message()));
  const std::string name = absl::StrCat(
      "backup-", absl::FormatTime("%Y%m%dT%H%M%SZ", absl::FromUnixMicros(now_micros), absl::UTCTimeZone()));
  const std::string final_path = backup_dir + "/" + name;
  if (fs::exists(final_path, ec)) return final_path;  // twice in one second: the same moment
  const std::string partial = backup_dir + "/.partial-" + name;
  fs::remove_all(partial, ec);
  RETURN_IF_ERROR(store->Checkpoint(partial));
  fs::rename(partial, final_path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("backup: rename to ", final_path, ": ", ec.message()));
  std::vector<std::string> all = ListBackups(backup_dir);
  for (size_t i = 0; keep > 0 && i + keep < all.size(); ++i) fs::remove_all(all[i], ec);
  return final_path;
}

absl::StatusOr<int64_t> RestoreBackup(const std::string& from, const std::string& state_dir) {
  std::error_code ec;
  if (!fs::exists(fs::path(from) / "CURRENT", ec)) {
    return absl::InvalidArgumentError(absl::StrCat("--restore-from: ", from, " is not a backup (no CURRENT file)"));
  }
  if (fs::exists(state_dir, ec) && !fs::is_empty(state_dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--state-dir: ", state_dir, " is not empty: restore into a new directory"));
  }
  const std::string partial = state_dir + ".restoring";
  fs::remove_all(partial, ec);
  fs::copy(from, partial, fs::copy_options::recursive, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("restore: copy ", from, ": ", ec.message()));
  fs::remove(state_dir, ec);  // empty, if there
  fs::rename(partial, state_dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("restore: rename to ", state_dir, ": ", ec.message()));
  RocksStoreOptions o;
  o.dir = state_dir;
  ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenRocksStore(o));
  int64_t jobs = 0;
  RETURN_IF_ERROR(store->ScanJobs("", [&](const v1::Job&) { return ++jobs > 0; }));
  return jobs;
}

}  // namespace topiary::server
