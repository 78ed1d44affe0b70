// Reading and writing the safetensors format, torch-free.
//
// File format (https://github.com/huggingface/safetensors):
//   bytes [0, 8)        N, the header length, little-endian uint64
//   bytes [8, 8+N)      JSON: {"<name>": {"dtype": "BF16", "shape": [..],
//                        "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}
//   bytes [8+N, EOF)    the data; offsets are relative to its start
//
// The reader treats the file as untrusted and refuses: N larger than the file
// or than 100 MB, invalid JSON, unknown dtypes, offsets outside the data,
// end-begin != numel*itemsize, and overlapping ranges. It maps the file
// read-only (mmap); tensor data is a pointer into the mapping, valid while the
// SafetensorsFile lives. Reader and writer are thread-compatible.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace topiary::model {

enum class DType { kF32, kF16, kBF16 };

absl::string_view DTypeName(DType dtype);  // "F32", "F16", "BF16"
int DTypeSize(DType dtype);
absl::StatusOr<DType> ParseDType(absl::string_view name);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data section
  uint64_t end = 0;
  int64_t numel() const;
};

inline constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr when absent.
  const TensorInfo* Find(absl::string_view name) const;
  // Start of the tensor's bytes inside the mapping (end - begin bytes long).
  const uint8_t* Data(const TensorInfo& info) const { return data_ + info.begin; }
  uint64_t file_size() const { return size_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  int fd_ = -1;
  uint64_t size_ = 0;
  const uint8_t* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Parses and validates a header (the JSON text) against a data section of
// `data_size` bytes. Exposed for tests and for tools that read headers only.
absl::StatusOr<std::vector<TensorInfo>> ParseHeader(absl::string_view json_text, uint64_t data_size,
                                                    std::map<std::string, std::string>* metadata);

// Memory that I/O is staged in: anonymous, 2 MiB-aligned and advised to be
// backed by transparent huge pages. The kernel's copies into and out of it
// (a buffered write, a read from the page cache) then miss the TLB once per
// 2 MiB, not per 4 KiB: buffered writes of 9 GB from such a buffer took 2.9 s
// against 9.5 s from heap memory on a virtual machine with shadow page
// tables. Throws std::bad_alloc when it cannot be mapped.
class StagingBuffer {
 public:
  StagingBuffer() = default;
  explicit StagingBuffer(size_t bytes);
  ~StagingBuffer();
  StagingBuffer(StagingBuffer&& o) noexcept;
  StagingBuffer& operator=(StagingBuffer&& o) noexcept;
  uint8_t* get() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;  // a multiple of 2 MiB
};

// Reads byte ranges of live SafetensorsFile mappings with pread, not through
// the mapping (no page faults or page-table entries), ahead of their use: the
// caller queues ranges in the order it will take them, and reader threads
// read them into a ring of buffers while it works on earlier ones, across
// tensors, so that a stream of reads never drains between them. A source (a
// tensor) is read from the page cache when at least half of it is resident
// there (mincore), else with O_DIRECT into the ring, so that a cold checkpoint
// streams from disk without churning the page cache (falling back to a
// cached read where the file system refuses O_DIRECT). The choice is made
// once per source: the kernel's read-ahead for cached reads would make the
// next bytes look resident. A process that neither owns the file nor may
// write it sees only the pages it has mapped itself (mincore's rule) and
// reads direct. Memory: `slots` buffers of max_bytes (plus two pages).
// Queue and Take are called from one thread at a time.
class ReadAhead {
 public:
  ReadAhead(size_t max_bytes, int slots, int threads);
  ~ReadAhead();  // waits for the reads in flight
  ReadAhead(const ReadAhead&) = delete;
  ReadAhead& operator=(const ReadAhead&) = delete;

  // Starts the source [p, p + n), which must lie inside one live mapping
  // that outlives the reads of its ranges: chooses how they are read.
  // False (and nothing to queue) when it is not mapped.
  bool Begin(const void* p, size_t n);
  // Queues [p, p + n) of the current source. A range longer than max_bytes
  // or outside the source's mapping is queued as failed.
  void Queue(const void* p, size_t n);
  // Waits for the oldest queued range not yet taken and returns its bytes,
  // valid until the next Take; nullptr when it could not be read (the caller
  // reads it another way) or nothing is queued.
  const uint8_t* Take();
  // How many ranges were read direct (tests, benches).
  int64_t direct_reads() const { return direct_reads_.load(); }

 private:
  struct Request;
  struct Shared;
  void ReadLoop();
  size_t max_bytes_;
  std::vector<StagingBuffer> slots_;  // max_bytes + 2 pages each
  std::unique_ptr<Shared> shared_;
  std::vector<std::thread> threads_;
  // The current source, and the files opened O_DIRECT (by source fd).
  int fd_ = -1, direct_fd_ = -1;
  struct Direct {
    uint64_t dev, ino;
    int fd;
  };
  std::map<int, Direct> direct_fds_;
  std::atomic<int64_t> direct_reads_{0};
};

// Streams a safetensors file: the caller declares every tensor up front, then
// passes each tensor's bytes in declaration order. The file is written to a
// temporary name and renamed on Finish(), so a crash never leaves a torn file.
// With `direct`, whole 4096-byte blocks are written with O_DIRECT (straight
// to disk: no copy into the page cache, no dirty pages, nothing for Finish's
// fsync to wait for) and only the last partial block through the cache; the
// writer falls back to cached writes where the file system refuses O_DIRECT.
// For large files written once.
class SafetensorsWriter {
 public:
  struct Decl {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<Decl> decls, const std::map<std::string, std::string>& metadata = {},
      bool durable = true, bool direct = false);
  ~SafetensorsWriter();

  // Writes the next declared tensor; nbytes must equal its declared size.
  absl::Status WriteNext(const void* data, size_t nbytes);
  // Writes the next declared tensor, of nbytes, in pieces of piece_bytes (the
  // last may be shorter): fill(buf, offset, len) puts bytes [offset,
  // offset+len) of the tensor into buf. The next piece is filled on a second
  // thread while this one is written; the two buffers are reused.
  using PieceFill = std::function<void(uint8_t* buf, size_t offset, size_t len)>;
  absl::Status WriteNextInPieces(size_t nbytes, size_t piece_bytes, const PieceFill& fill);
  // Flushes, fsyncs (when durable) and renames into place. Fails if tensors
  // are missing.
  absl::Status Finish();
  // Whether blocks are being written with O_DIRECT (tests, benches).
  bool writing_direct() const { return direct_fd_ >= 0; }

 private:
  struct FreeDeleter {
    void operator()(uint8_t* p) const;
  };
  using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;
  SafetensorsWriter() = default;
  absl::Status CheckNext(size_t nbytes) const;
  void StartWriteback(size_t nbytes);
  // Ensures both piece buffers hold `bytes` (plus a block in direct mode).
  void ReservePieces(size_t bytes);
  // Direct mode: appends `data` through a piece buffer.
  absl::Status AppendCopy(const void* data, size_t n);
  // Direct mode: appends the n bytes at base + pos_ % 4096 (base is aligned:
  // the unwritten tail of the last block goes in front of them) and writes
  // the whole blocks.
  absl::Status Append(uint8_t* base, size_t n);
  std::string path_, tmp_path_;
  StagingBuffer pieces_[2];
  size_t piece_capacity_ = 0;
  int fd_ = -1;
  bool durable_ = true;
  bool direct_mode_ = false;  // writes go through Append at pos_
  int direct_fd_ = -1;        // the temporary file opened O_DIRECT, while it takes direct writes
  uint64_t pos_ = 0;          // direct mode: bytes of the file made so far
  Buffer tail_;               // direct mode: bytes [pos_ / 4096 * 4096, pos_), not yet written
  std::vector<Decl> decls_;
  size_t next_ = 0;
};

}  // namespace topiary::model
