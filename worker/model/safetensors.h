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

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
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

// Reads bytes of live SafetensorsFile mappings with pread, not through the
// mapping (no page faults or page-table entries). A source (a tensor) is read
// from the page cache when at least half of it is resident there (mincore),
// else with O_DIRECT into the reader's own buffer, so that a cold checkpoint
// streams from disk without churning the page cache (falling back to a cached
// read where the file system refuses O_DIRECT). The choice is made once per
// source: the kernel's read-ahead for cached reads would make the next bytes
// look resident. A process that neither owns the file nor may write it sees
// only the pages it has mapped itself (mincore's rule) and reads direct.
class MappedReader {
 public:
  explicit MappedReader(size_t max_bytes);
  ~MappedReader();
  MappedReader(const MappedReader&) = delete;
  MappedReader& operator=(const MappedReader&) = delete;

  // Starts reading the source [p, p + n) (inside one live mapping, which
  // must outlive its reads): chooses how its parts are read, and opens the
  // file for O_DIRECT once when they are read direct.
  void Begin(const void* p, size_t n);
  // Bytes [p, p + n) of the current source, valid until the next Read;
  // nullptr when n exceeds max_bytes, the range is not inside one live
  // mapping, or a read fails.
  const uint8_t* Read(const void* p, size_t n);
  // How many Reads went direct (tests, benches).
  int64_t direct_reads() const { return direct_reads_; }

 private:
  size_t max_bytes_;
  uint8_t* buf_ = nullptr;  // 4096-aligned, max_bytes + 2 pages
  int direct_fd_ = -1;      // the current source's file opened O_DIRECT, when it is read direct
  int64_t direct_reads_ = 0;
};

// Streams a safetensors file: the caller declares every tensor up front, then
// passes each tensor's bytes in declaration order. The file is written to a
// temporary name and renamed on Finish(), so a crash never leaves a torn file.
class SafetensorsWriter {
 public:
  struct Decl {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<Decl> decls, const std::map<std::string, std::string>& metadata = {},
      bool durable = true);
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

 private:
  SafetensorsWriter() = default;
  absl::Status CheckNext(size_t nbytes) const;
  void StartWriteback(size_t nbytes);
  std::string path_, tmp_path_;
  std::vector<uint8_t> pieces_[2];
  int fd_ = -1;
  bool durable_ = true;
  std::vector<Decl> decls_;
  size_t next_ = 0;
};

}  // namespace topiary::model
