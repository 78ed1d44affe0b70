// RocksDB layout: column families
//   jobs         job id -> Job
//   events       job id + '/' + seq (16 hex digits) -> Event
//   idempotency  principal + '\0' + request id -> job id
//   workers      worker id -> WorkerRecord (registration, principal, secret hash)
//   meta         "schema_version" -> "1"
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/store/store.h"

namespace topiary::server {
namespace {

const char* const kFamilies[] = {"default", "jobs", "events", "idempotency", "workers", "meta"};
enum Family { kDefault, kJobs, kEvents, kKeys, kWorkers, kMeta, kFamilyCount };

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  if (s.IsIOError() || s.IsCorruption()) return absl::InternalError(absl::StrCat("store: ", what, ": ", s.ToString()));
  return absl::UnavailableError(absl::StrCat("store: ", what, ": ", s.ToString()));
}

std::string EventKey(const std::string& job, int64_t seq) { return absl::StrFormat("%s/%016x", job, seq); }

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

  absl::Status Write(const StoreBatch& b) override {
    rocksdb::WriteBatch wb;
    for (const std::string& id : b.delete_jobs) {
      wb.Delete(cfs_[kJobs], id);
      wb.DeleteRange(cfs_[kEvents], id + "/", id + "0");  // '0' follows '/'
    }
    for (const std::string& k : b.delete_keys) wb.Delete(cfs_[kKeys], k);
    for (const v1::Job& j : b.put_jobs) wb.Put(cfs_[kJobs], j.id(), j.SerializeAsString());
    for (const v1::Event& e : b.events) wb.Put(cfs_[kEvents], EventKey(e.job_id(), e.seq()), e.SerializeAsString());
    for (const auto& [k, v] : b.put_keys) wb.Put(cfs_[kKeys], k, v);
    for (const std::string& w : b.delete_workers) wb.Delete(cfs_[kWorkers], w);
    for (const auto& [k, v] : b.put_workers) wb.Put(cfs_[kWorkers], k, v);
    rocksdb::WriteOptions wo = write_;
    wo.sync = write_.sync && b.durable;
    return FromRocks(db_->Write(wo, &wb), "write");
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
    if (v != std::to_string(kSchemaVersion)) {
      return absl::FailedPreconditionError(absl::StrCat("store: schema version ", v, " on disk, this build reads ",
                                                        kSchemaVersion));
    }
    return absl::OkStatus();
  }

 private:
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
