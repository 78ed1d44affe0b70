// RocksDB layout: column families
//   jobs         job id -> Job
//   events       job id + '/' + seq (16 hex digits) -> Event
//   idempotency  principal + '\0' + request id -> job id
//   workers      worker id -> WorkerRecord (registration, principal, secret hash)
//   index        "o\0<owner>\0<job id>", "s\0<state>\0<job id>" -> "" (ListJobs by owner, by state)
//   meta         "schema_version" -> "2"
#include <cstdarg>
#include <cstdio>
#include <ctime>

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/store/store.h"

namespace topiary::server {
namespace {

const char* const kFamilies[] = {"default", "jobs", "events", "idempotency", "workers", "meta", "index"};
enum Family { kDefault, kJobs, kEvents, kKeys, kWorkers, kMeta, kIndex, kFamilyCount };

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  if (s.IsCorruption()) return absl::InternalError(absl::StrCat("store: ", what, ": ", s.ToString()));
  // A disk that fails or fills up: retry later (the coordinator reports NOT_SERVING meanwhile).
  return absl::UnavailableError(absl::StrCat("store: ", what, ": ", s.ToString()));
}

std::string EventKey(const std::string& job, int64_t seq) { return absl::StrFormat("%s/%016x", job, seq); }

// RocksDB's own messages go to the coordinator's log, not to a LOG file in the
// state directory: a full disk must fail writes, not the logger (whose failed
// append asserts in Debian's build).
class RocksLogger : public rocksdb::Logger {
 public:
  RocksLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override { Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap); }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char buf[1024];
    vsnprintf(buf, sizeof(buf), format, ap);
    const std::string line = absl::StrCat("rocksdb: ", buf);
    if (level >= rocksdb::InfoLogLevel::ERROR_LEVEL) {
      log::Error(line);
    } else {
      log::Warn(line);
    }
  }
};

class RocksStore : public Store {
 public:
  RocksStore(std::unique_ptr<rocksdb::DB> db, std::vector<rocksdb::ColumnFamilyHandle*> cfs, bool sync)
      : db_(std::move(db)), cfs_(std::move(cfs)) {
    write_.sync = sync;
  }
  ~RocksStore() override {
    for (auto* h : cfs_) db_->DestroyColumnFamilyHandle(h);
    db_->Close();
  }

  absl::Status Checkpoint(const std::string& dir) override {
    rocksdb::Checkpoint* raw = nullptr;
    RETURN_IF_ERROR(FromRocks(rocksdb::Checkpoint::Create(db_.get(), &raw), "start a checkpoint"));
    std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
    // Flushes the memtables first (log_size_for_flush 0): the copy needs no WAL replay.
    return FromRocks(checkpoint->CreateCheckpoint(dir, 0), "write a checkpoint to " + dir);
  }

  absl::Status Write(const StoreBatch& b) override {
    rocksdb::WriteBatch wb;
    for (const std::string& id : b.delete_jobs) {
      absl::StatusOr<std::optional<v1::Job>> old = GetJob(id);
      if (!old.ok()) return old.status();
      if (old->has_value()) {
        wb.Delete(cfs_[kIndex], OwnerIndexKey((*old)->owner(), id));
        wb.Delete(cfs_[kIndex], StateIndexKey((*old)->state(), id));
      }
      wb.Delete(cfs_[kJobs], id);
      wb.DeleteRange(cfs_[kEvents], id + "/", id + "0");  // '0' follows '/'
    }
    for (const std::string& k : b.delete_keys) wb.Delete(cfs_[kKeys], k);
    for (const v1::Job& j : b.put_jobs) {
      // Writes of one job are serialised by the JobManager, so the record read here is the latest.
      absl::StatusOr<std::optional<v1::Job>> old = GetJob(j.id());
      if (!old.ok()) return old.status();
      if (old->has_value() && (*old)->state() != j.state())
        wb.Delete(cfs_[kIndex], StateIndexKey((*old)->state(), j.id()));
      if (!old->has_value()) wb.Put(cfs_[kIndex], OwnerIndexKey(j.owner(), j.id()), "");
      if (!old->has_value() || (*old)->state() != j.state()) wb.Put(cfs_[kIndex], StateIndexKey(j.state(), j.id()), "");
      wb.Put(cfs_[kJobs], j.id(), j.SerializeAsString());
    }
    for (const v1::Event& e : b.events) wb.Put(cfs_[kEvents], EventKey(e.job_id(), e.seq()), e.SerializeAsString());
    for (const auto& [k, v] : b.put_keys) wb.Put(cfs_[kKeys], k, v);
    for (const std::string& w : b.delete_workers) wb.Delete(cfs_[kWorkers], w);
    for (const auto& [k, v] : b.put_workers) wb.Put(cfs_[kWorkers], k, v);
    rocksdb::WriteOptions wo = write_;
    wo.sync = write_.sync && b.durable;
    return FromRocks(db_->Write(wo, &wb), "write");
  }

  absl::Status Recover() override {
    rocksdb::Status s = db_->Resume();  // clears a background error once the disk allows
    if (!s.ok()) return FromRocks(s, "resume");
    rocksdb::WriteOptions wo;
    wo.sync = true;
    return FromRocks(db_->Put(wo, cfs_[kMeta], "health_probe", std::to_string(time(nullptr))), "probe write");
  }

  absl::StatusOr<std::optional<v1::Job>> GetJob(const std::string& id) override {
    std::string v;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kJobs], id, &v);
    if (s.IsNotFound()) return std::optional<v1::Job>();
    if (!s.ok()) return FromRocks(s, "get job");
    v1::Job j;
    if (!j.ParseFromString(v)) return absl::InternalError(absl::StrCat("store: job ", id, " is corrupt"));
    return std::optional<v1::Job>(std::move(j));
  }

  absl::StatusOr<std::optional<std::string>> GetKey(const std::string& key) override {
    std::string v;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kKeys], key, &v);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) return FromRocks(s, "get key");
    return std::optional<std::string>(v);
  }

  absl::StatusOr<std::vector<v1::Event>> Events(const std::string& job, int64_t after, int limit) override {
    std::vector<v1::Event> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kEvents]));
    const std::string prefix = job + "/";
    for (it->Seek(EventKey(job, after + 1)); it->Valid() && static_cast<int>(out.size()) < limit; it->Next()) {
      if (!it->key().starts_with(prefix)) break;
      v1::Event e;
      if (!e.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return absl::InternalError(absl::StrCat("store: event ", it->key().ToString(), " is corrupt"));
      }
      out.push_back(std::move(e));
    }
    if (!it->status().ok()) return FromRocks(it->status(), "scan events");
    return out;
  }

  absl::Status ScanJobs(const std::string& after, const std::function<bool(const v1::Job&)>& fn) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kJobs]));
    if (after.empty()) {
      it->SeekToLast();
    } else {
      it->SeekForPrev(after);
      if (it->Valid() && it->key() == after) it->Prev();
    }
    for (; it->Valid(); it->Prev()) {
      v1::Job j;
      if (!j.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return absl::InternalError(absl::StrCat("store: job ", it->key().ToString(), " is corrupt"));
      }
      if (!fn(j)) break;
    }
    return FromRocks(it->status(), "scan jobs");
  }

  absl::Status ScanJobsOf(const std::string& owner, const std::string& after,
                          const std::function<bool(const v1::Job&)>& fn) override {
    return ScanIndex(OwnerIndexKey(owner, ""), after, fn);
  }

  absl::Status ScanJobsIn(v1::JobState state, const std::string& after,
                          const std::function<bool(const v1::Job&)>& fn) override {
    return ScanIndex(StateIndexKey(state, ""), after, fn);
  }

  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Workers() override {
    std::vector<std::pair<std::string, std::string>> out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kWorkers]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) out.emplace_back(it->key().ToString(), it->value().ToString());
    if (!it->status().ok()) return FromRocks(it->status(), "scan workers");
    return out;
  }

  absl::Status CheckSchema() {
    std::string v;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kMeta], "schema_version", &v);
    if (s.IsNotFound()) {
      return FromRocks(db_->Put(write_, cfs_[kMeta], "schema_version", std::to_string(kSchemaVersion)), "schema");
    }
    if (!s.ok()) return FromRocks(s, "schema");
    if (v == "1") {  // before the job index: build it from the jobs, then say so
      rocksdb::WriteBatch wb;
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kJobs]));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        v1::Job j;
        if (!j.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) continue;
        wb.Put(cfs_[kIndex], OwnerIndexKey(j.owner(), j.id()), "");
        wb.Put(cfs_[kIndex], StateIndexKey(j.state(), j.id()), "");
      }
      wb.Put(cfs_[kMeta], "schema_version", std::to_string(kSchemaVersion));
      rocksdb::WriteOptions wo;
      wo.sync = true;
      RETURN_IF_ERROR(FromRocks(db_->Write(wo, &wb), "index the jobs"));
      v = std::to_string(kSchemaVersion);
    }
    if (v != std::to_string(kSchemaVersion)) {
      return absl::FailedPreconditionError(
          absl::StrCat("store: schema version ", v, " on disk, this build reads ", kSchemaVersion));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status ScanIndex(const std::string& prefix, const std::string& after,
                         const std::function<bool(const v1::Job&)>& fn) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kIndex]));
    if (after.empty()) {
      it->SeekForPrev(prefix + "\xff");
    } else {
      it->SeekForPrev(prefix + after);
      if (it->Valid() && it->key() == prefix + after) it->Prev();
    }
    for (; it->Valid() && it->key().starts_with(prefix); it->Prev()) {
      const std::string id = it->key().ToString().substr(prefix.size());
      absl::StatusOr<std::optional<v1::Job>> j = GetJob(id);
      if (!j.ok()) return j.status();
      if (j->has_value() && !fn(**j)) break;
    }
    return FromRocks(it->status(), "scan the job index");
  }

  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
  rocksdb::WriteOptions write_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenRocksStore(const RocksStoreOptions& o) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.info_log = std::make_shared<RocksLogger>();
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const char* name : kFamilies) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, o.dir, families, &handles, &raw);
  if (!s.ok()) return absl::UnavailableError(absl::StrCat("store: cannot open ", o.dir, ": ", s.ToString()));
  auto store = std::make_unique<RocksStore>(std::unique_ptr<rocksdb::DB>(raw), std::move(handles), o.sync);
  absl::Status st = store->CheckSchema();
  if (!st.ok()) return st;
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace topiary::server
