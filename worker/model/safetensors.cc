#include "worker/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <new>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "common/mutex.h"
#include "common/status_macros.h"

namespace topiary::model {
namespace {

using json = nlohmann::json;

absl::Status Corrupt(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": invalid safetensors file: ", what));
}

// numel * itemsize with overflow detection.
bool ByteSize(const std::vector<int64_t>& shape, int itemsize, uint64_t* out) {
  unsigned __int128 n = itemsize;
  for (int64_t d : shape) {
    if (d < 0) return false;
    n *= static_cast<uint64_t>(d);
    if (n > (static_cast<unsigned __int128>(1) << 62)) return false;
  }
  *out = static_cast<uint64_t>(n);
  return true;
}

// Live mappings of SafetensorsFile objects: base address -> (size, fd of the
// mapped inode). Lets the writer copy bytes that come straight from a mapped
// checkpoint with copy_file_range (in-kernel, no page faults on the source).
struct Mapping {
  uint64_t size;
  int fd;
};
Mutex mappings_mu;
std::map<uintptr_t, Mapping>& Mappings() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mappings_mu) {
  static auto* m = new std::map<uintptr_t, Mapping>;
  return *m;
}

// The file and offset behind [p, p+n) when it lies inside one live mapping.
bool FindMapped(const void* p, size_t n, int* fd, uint64_t* offset) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  MutexLock lock(&mappings_mu);
  auto& m = Mappings();
  auto it = m.upper_bound(a);
  if (it == m.begin()) return false;
  --it;
  if (a + n > it->first + it->second.size) return false;
  *fd = it->second.fd;
  *offset = a - it->first;
  return true;
}

// Copies up to n bytes at `offset` of `src_fd` to the current position of
// `fd`; returns how many it copied (fewer when the kernel cannot, e.g. across
// file systems: the caller writes the rest).
size_t CopyRange(int src_fd, uint64_t offset, int fd, size_t n) {
  loff_t off = static_cast<loff_t>(offset);
  size_t done = 0;
  while (done < n) {
    ssize_t c = ::copy_file_range(src_fd, &off, fd, nullptr, n - done, 0);
    if (c < 0 && errno == EINTR) continue;
    if (c <= 0) break;
    done += static_cast<size_t>(c);
  }
  return done;
}

absl::Status WriteAll(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("write ", path, ": ", std::strerror(errno)));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

int DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

namespace {

constexpr size_t kAlign = 4096;  // O_DIRECT's alignment on every block size up to 4096

// Reads n bytes at `offset` of fd into out; false on an error or end of file
// before n (at least `need` bytes when need < n: a direct read runs to the
// aligned end, past the end of the file).
bool PreadAll(int fd, uint8_t* out, size_t n, uint64_t offset, size_t need) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, out + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return false;
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done >= need;
}

// Whether at least half of the pages behind [p, p + n) (a mapping) are in
// the page cache; true when it is not a mapping, so that it is read as it is.
bool MostlyResident(const void* p, size_t n) {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t a = reinterpret_cast<uintptr_t>(p) / page * page;
  std::vector<unsigned char> in((reinterpret_cast<uintptr_t>(p) + n - a + page - 1) / page);
  if (n == 0 || ::mincore(reinterpret_cast<void*>(a), in.size() * page, in.data()) != 0) return true;
  size_t resident = 0;
  for (unsigned char c : in) resident += c & 1;
  return 2 * resident >= in.size();
}

}  // namespace

// A queued range: where it is read from, and once read, where its bytes are.
struct ReadAhead::Request {
  int fd = -1, direct_fd = -1;  // direct_fd >= 0: read with O_DIRECT
  uint64_t offset = 0;
  size_t n = 0;
  bool done = false;
  const uint8_t* data = nullptr;  // nullptr when it failed
};

// State the reader threads share with the caller. Request i is read into
// slot i % slots once request i - slots is released (the caller has taken a
// later one): queued_[0] is request base.
struct ReadAhead::Shared {
  Mutex mu;
  std::deque<Request> queued ABSL_GUARDED_BY(mu);
  int64_t base ABSL_GUARDED_BY(mu) = 0;
  int64_t next_read ABSL_GUARDED_BY(mu) = 0;  // the next request a reader starts
  int64_t taken ABSL_GUARDED_BY(mu) = 0;      // requests taken so far
  int64_t released ABSL_GUARDED_BY(mu) = 0;   // requests whose slot is free again
  bool stop ABSL_GUARDED_BY(mu) = false;
  CondVar changed;  // any of the above
};

StagingBuffer::StagingBuffer(size_t bytes) {
  constexpr size_t kHuge = 2 << 20;
  size_ = (std::max<size_t>(bytes, 1) + kHuge - 1) / kHuge * kHuge;
  // Mapped with a huge page's slack, then trimmed to a 2 MiB-aligned range.
  const size_t mapped = size_ + kHuge;
  void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(p), aligned = (start + kHuge - 1) / kHuge * kHuge;
  if (aligned > start) ::munmap(p, aligned - start);
  if (const size_t after = start + mapped - (aligned + size_); after > 0) {
    ::munmap(reinterpret_cast<void*>(aligned + size_), after);
  }
  data_ = reinterpret_cast<uint8_t*>(aligned);
  (void)::madvise(data_, size_, MADV_HUGEPAGE);  // advisory: without it, 4 KiB pages
}

StagingBuffer::~StagingBuffer() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

StagingBuffer::StagingBuffer(StagingBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

StagingBuffer& StagingBuffer::operator=(StagingBuffer&& o) noexcept {
  if (this != &o) {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = std::exchange(o.data_, nullptr), size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

ReadAhead::ReadAhead(size_t max_bytes, int slots, int threads) : max_bytes_(max_bytes), shared_(new Shared) {
  for (int i = 0; i < std::max(1, slots); ++i) slots_.emplace_back(max_bytes + 2 * kAlign);
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { ReadLoop(); });
}

ReadAhead::~ReadAhead() {
  {
    MutexLock lock(&shared_->mu);
    shared_->stop = true;
    shared_->changed.SignalAll();
  }
  for (std::thread& t : threads_) t.join();
  for (auto& [fd, d] : direct_fds_) {
    if (d.fd >= 0) ::close(d.fd);
  }
}

bool ReadAhead::Begin(const void* p, size_t n) {
  fd_ = direct_fd_ = -1;
  uint64_t offset = 0;
  if (n == 0 || !FindMapped(p, n, &fd_, &offset)) return fd_ = -1, false;
  if (MostlyResident(p, n)) return true;
  // One O_DIRECT descriptor per source file, reopened if the source's
  // descriptor number now names another file. Where the file system refuses
  // O_DIRECT the source is read through the cache.
  struct stat st;
  if (::fstat(fd_, &st) != 0) return true;
  auto it = direct_fds_.find(fd_);
  if (it != direct_fds_.end() && (it->second.dev != st.st_dev || it->second.ino != st.st_ino)) {
    if (it->second.fd >= 0) ::close(it->second.fd);
    direct_fds_.erase(it);
    it = direct_fds_.end();
  }
  if (it == direct_fds_.end()) {
    const int d = ::open(absl::StrCat("/proc/self/fd/", fd_).c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    it = direct_fds_.emplace(fd_, Direct{st.st_dev, st.st_ino, d}).first;
  }
  direct_fd_ = it->second.fd;
  return true;
}

void ReadAhead::Queue(const void* p, size_t n) {
  Request r;
  int fd = -1;
  if (fd_ >= 0 && n <= max_bytes_ && FindMapped(p, n, &fd, &r.offset) && fd == fd_) {
    r.fd = fd_, r.direct_fd = direct_fd_, r.n = n;
  } else {
    r.done = true;  // failed: nothing to read
  }
  MutexLock lock(&shared_->mu);
  shared_->queued.push_back(r);
  shared_->changed.SignalAll();
}

const uint8_t* ReadAhead::Take() {
  Shared& s = *shared_;
  MutexLock lock(&s.mu);
  s.released = s.taken;  // the range taken last is no longer used
  while (s.base < s.released && !s.queued.empty()) s.queued.pop_front(), ++s.base;
  s.next_read = std::max(s.next_read, s.base);  // a range queued as failed may be taken before a reader passes it
  s.changed.SignalAll();
  const int64_t i = s.taken;
  if (i >= s.base + static_cast<int64_t>(s.queued.size())) return nullptr;
  while (!s.queued[i - s.base].done) s.changed.Wait(&s.mu);
  ++s.taken;
  return s.queued[i - s.base].data;
}

void ReadAhead::ReadLoop() {
  Shared& s = *shared_;
  const int64_t slots = static_cast<int64_t>(slots_.size());
  for (;;) {
    Request* r = nullptr;
    int64_t i = 0;
    {
      MutexLock lock(&s.mu);
      while (!s.stop &&
             !(s.next_read < s.base + static_cast<int64_t>(s.queued.size()) && s.next_read < s.released + slots))
        s.changed.Wait(&s.mu);
      if (s.stop) return;
      i = s.next_read++;
      r = &s.queued[i - s.base];  // deque elements stay put while others are added or popped
      if (r->done) continue;      // queued as failed
    }
    // The bytes land at buf + offset % kAlign: a direct read of the aligned
    // range around them then starts at buf.
    uint8_t* buf = slots_[i % slots].get();
    uint8_t* data = buf + r->offset % kAlign;
    bool ok = false;
    if (r->direct_fd >= 0) {
      const uint64_t first = r->offset / kAlign * kAlign;
      const size_t span = (r->offset + r->n - first + kAlign - 1) / kAlign * kAlign;
      ok = PreadAll(r->direct_fd, buf, span, first, r->offset + r->n - first);
      if (ok) ++direct_reads_;
    }
    if (!ok) ok = PreadAll(r->fd, data, r->n, r->offset, r->n);
    MutexLock lock(&s.mu);
    r->data = ok ? data : nullptr;
    r->done = true;
    s.changed.SignalAll();
  }
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype '", name, "' (supported: F32, F16, BF16)"));
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::vector<TensorInfo>> ParseHeader(absl::string_view text, uint64_t data_size,
                                                    std::map<std::string, std::string>* metadata) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("header is not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("header is not a JSON object");
  std::vector<TensorInfo> out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return absl::InvalidArgumentError("__metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return absl::InvalidArgumentError("__metadata__ values must be strings");
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto err = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': ", what));
    };
    if (!v.is_object()) return err("entry is not an object");
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) return err("missing dtype");
    auto dtype = ParseDType(dt->get<std::string>());
    if (!dtype.ok()) return err(dtype.status().message());
    TensorInfo info;
    info.name = name;
    info.dtype = *dtype;
    auto shape = v.find("shape");
    if (shape == v.end() || !shape->is_array()) return err("missing shape");
    for (const auto& d : *shape) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) return err("shape entries must be non-negative integers");
      info.shape.push_back(d.get<int64_t>());
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned()) {
      return err("data_offsets must be [begin, end] of non-negative integers");
    }
    info.begin = (*off)[0].get<uint64_t>();
    info.end = (*off)[1].get<uint64_t>();
    if (info.begin > info.end) return err("data_offsets begin > end");
    if (info.end > data_size) {
      return err(absl::StrCat("data is not within the file bounds (end ", info.end, " > data size ", data_size, ")"));
    }
    uint64_t bytes = 0;
    if (!ByteSize(info.shape, DTypeSize(info.dtype), &bytes)) return err("shape too large");
    if (info.end - info.begin != bytes) {
      return err(absl::StrCat("data_offsets span ", info.end - info.begin, " bytes but shape and dtype need ", bytes));
    }
    out.push_back(std::move(info));
  }
  std::vector<const TensorInfo*> sorted;
  for (const auto& t : out) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i]->begin < sorted[i - 1]->end) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensors '", sorted[i - 1]->name, "' and '", sorted[i]->name, "' have overlapping data ranges"));
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return errno == ENOENT ? absl::NotFoundError(absl::StrCat(path, ": no such file"))
                           : absl::PermissionDeniedError(absl::StrCat(path, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": fstat failed"));
  }
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile);
  f->path_ = path;
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ < 8) {
    ::close(fd);
    return Corrupt(path, absl::StrCat("file is ", f->size_, " bytes, shorter than the 8-byte header length"));
  }
  void* map = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
  }
  f->map_ = map;
  f->fd_ = fd;  // the mapped inode, even if the path is replaced later
  {
    MutexLock lock(&mappings_mu);
    Mappings()[reinterpret_cast<uintptr_t>(map)] = Mapping{f->size_, fd};
  }
  // Checkpoints are read front to back: start reading ahead now.
  ::madvise(map, f->size_, MADV_WILLNEED);
  const uint8_t* bytes = static_cast<const uint8_t*>(map);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > kMaxHeaderBytes) return Corrupt(path, absl::StrCat("header length ", n, " exceeds the 100 MB limit"));
  if (n > f->size_ - 8) return Corrupt(path, absl::StrCat("header length ", n, " is larger than the file"));
  f->data_ = bytes + 8 + n;
  auto infos =
      ParseHeader(absl::string_view(reinterpret_cast<const char*>(bytes + 8), n), f->size_ - 8 - n, &f->metadata_);
  if (!infos.ok()) return Corrupt(path, infos.status().message());
  f->tensors_ = std::move(*infos);
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_[f->tensors_[i].name] = i;
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) {
    MutexLock lock(&mappings_mu);
    Mappings().erase(reinterpret_cast<uintptr_t>(map_));
  }
  if (map_) ::munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<Decl> decls, const std::map<std::string, std::string>& metadata, bool durable,
    bool direct) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const Decl& d : decls) {
    uint64_t bytes = 0;
    if (!ByteSize(d.shape, DTypeSize(d.dtype), &bytes)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", d.name, "': shape too large"));
    }
    if (header.contains(d.name)) return absl::InvalidArgumentError(absl::StrCat("duplicate tensor '", d.name, "'"));
    header[d.name] = {
        {"dtype", std::string(DTypeName(d.dtype))}, {"shape", d.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // align the data section
  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter);
  w->path_ = path;
  w->tmp_path_ = absl::StrCat(path, ".tmp.", ::getpid());
  w->decls_ = std::move(decls);
  w->durable_ = durable;
  w->fd_ = ::open(w->tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w->fd_ < 0) return absl::InternalError(absl::StrCat("create ", w->tmp_path_, ": ", std::strerror(errno)));
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  if (direct) {
    w->direct_mode_ = true;
    w->direct_fd_ = ::open(w->tmp_path_.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
    w->tail_.reset(static_cast<uint8_t*>(std::aligned_alloc(kAlign, kAlign)));
    RETURN_IF_ERROR(w->AppendCopy(len, 8));
    RETURN_IF_ERROR(w->AppendCopy(text.data(), text.size()));
    return w;
  }
  RETURN_IF_ERROR(WriteAll(w->fd_, len, 8, w->tmp_path_));
  RETURN_IF_ERROR(WriteAll(w->fd_, text.data(), text.size(), w->tmp_path_));
  return w;
}

void SafetensorsWriter::FreeDeleter::operator()(uint8_t* p) const { std::free(p); }

void SafetensorsWriter::ReservePieces(size_t bytes) {
  if (direct_mode_) bytes += kAlign;  // room for the last block's tail in front
  if (piece_capacity_ >= bytes) return;
  const size_t cap = (bytes + kAlign - 1) / kAlign * kAlign;
  for (auto& b : pieces_) b = StagingBuffer(cap);
  piece_capacity_ = pieces_[0].size();
}

absl::Status SafetensorsWriter::Append(uint8_t* base, size_t n) {
  const size_t h = pos_ % kAlign;
  std::memcpy(base, tail_.get(), h);
  const size_t total = h + n, whole = total / kAlign * kAlign;
  const uint64_t at = pos_ - h;
  for (bool retry = true; whole > 0 && retry;) {
    const int fd = direct_fd_ >= 0 ? direct_fd_ : fd_;
    retry = false;
    for (size_t done = 0; done < whole;) {
      const ssize_t w = ::pwrite(fd, base + done, whole - done, static_cast<off_t>(at + done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && fd == direct_fd_ && errno == EINVAL) {  // O_DIRECT refused after all: write through the cache
        ::close(direct_fd_);
        direct_fd_ = -1;
        retry = true;
        break;
      }
      if (w <= 0) return absl::InternalError(absl::StrCat("write ", tmp_path_, ": ", std::strerror(errno)));
      done += static_cast<size_t>(w);
    }
  }
  std::memcpy(tail_.get(), base + whole, total - whole);
  pos_ += n;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::AppendCopy(const void* data, size_t n) {
  const size_t chunk = 4 << 20;
  ReservePieces(std::min(n, chunk));
  for (size_t done = 0; done < n;) {
    const size_t len = std::min(chunk, n - done);
    std::memcpy(pieces_[0].get() + pos_ % kAlign, static_cast<const uint8_t*>(data) + done, len);
    RETURN_IF_ERROR(Append(pieces_[0].get(), len));
    done += len;
  }
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::CheckNext(size_t nbytes) const {
  if (fd_ < 0) return absl::FailedPreconditionError("writer is closed");
  if (next_ >= decls_.size()) return absl::FailedPreconditionError("more tensors written than declared");
  const Decl& d = decls_[next_];
  uint64_t expected = 0;
  ByteSize(d.shape, DTypeSize(d.dtype), &expected);
  if (nbytes != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", d.name, "': got ", nbytes, " bytes, declared ", expected));
  }
  return absl::OkStatus();
}

// Starts writeback of the nbytes just written, so that the fsync in Finish()
// overlaps with producing the next tensors instead of waiting for all of it.
void SafetensorsWriter::StartWriteback(size_t nbytes) {
  const off_t end = durable_ && !direct_mode_ ? ::lseek(fd_, 0, SEEK_CUR) : 0;
  if (end > 0)
    ::sync_file_range(fd_, end - static_cast<off_t>(nbytes), static_cast<off_t>(nbytes), SYNC_FILE_RANGE_WRITE);
}

absl::Status SafetensorsWriter::WriteNext(const void* data, size_t nbytes) {
  RETURN_IF_ERROR(CheckNext(nbytes));
  if (direct_mode_) {
    RETURN_IF_ERROR(AppendCopy(data, nbytes));
    ++next_;
    return absl::OkStatus();
  }
  int src_fd = -1;
  uint64_t offset = 0;
  size_t copied = 0;
  if (FindMapped(data, nbytes, &src_fd, &offset)) copied = CopyRange(src_fd, offset, fd_, nbytes);
  RETURN_IF_ERROR(WriteAll(fd_, static_cast<const char*>(data) + copied, nbytes - copied, tmp_path_));
  StartWriteback(nbytes);
  ++next_;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::WriteNextInPieces(size_t nbytes, size_t piece_bytes, const PieceFill& fill) {
  RETURN_IF_ERROR(CheckNext(nbytes));
  if (piece_bytes == 0) return absl::InvalidArgumentError("pieces of 0 bytes");
  piece_bytes = std::min(piece_bytes, nbytes);
  ReservePieces(piece_bytes);
  // In direct mode a piece goes into its buffer after the tail of the block
  // before it (its offset in the file modulo the block size).
  const uint64_t start = pos_;
  auto lead = [&](size_t offset) { return direct_mode_ ? static_cast<size_t>((start + offset) % kAlign) : 0; };
  auto fill_piece = [&](size_t offset) {
    const size_t len = std::min(piece_bytes, nbytes - offset);
    uint8_t* buf = pieces_[(offset / piece_bytes) % 2].get() + lead(offset);
    return std::async(std::launch::async, [&fill, buf, offset, len] { fill(buf, offset, len); });
  };
  std::future<void> filling;
  if (nbytes > 0) filling = fill_piece(0);
  for (size_t offset = 0; offset < nbytes; offset += piece_bytes) {
    filling.get();
    if (offset + piece_bytes < nbytes) filling = fill_piece(offset + piece_bytes);  // the other buffer
    const size_t len = std::min(piece_bytes, nbytes - offset);
    uint8_t* buf = pieces_[(offset / piece_bytes) % 2].get();
    // On a failed write the future's destructor waits for the fill in flight.
    RETURN_IF_ERROR(direct_mode_ ? Append(buf, len) : WriteAll(fd_, buf, len, tmp_path_));
  }
  StartWriteback(nbytes);
  ++next_;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  if (fd_ < 0) return absl::FailedPreconditionError("writer is closed");
  if (next_ != decls_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("only ", next_, " of ", decls_.size(), " declared tensors were written"));
  }
  if (direct_mode_ && pos_ % kAlign != 0) {  // the last partial block, through the cache
    const size_t h = pos_ % kAlign;
    for (size_t done = 0; done < h;) {
      const ssize_t w = ::pwrite(fd_, tail_.get() + done, h - done, static_cast<off_t>(pos_ - h + done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return absl::InternalError(absl::StrCat("write ", tmp_path_, ": ", std::strerror(errno)));
      done += static_cast<size_t>(w);
    }
  }
  int rc = durable_ ? ::fsync(fd_) : 0;
  ::close(fd_);
  fd_ = -1;
  if (direct_fd_ >= 0) ::close(direct_fd_);
  direct_fd_ = -1;
  if (rc != 0) return absl::InternalError(absl::StrCat("fsync ", tmp_path_, ": ", std::strerror(errno)));
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename to ", path_, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

SafetensorsWriter::~SafetensorsWriter() {
  if (direct_fd_ >= 0) ::close(direct_fd_);
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_path_.c_str());
  }
}

}  // namespace topiary::model
