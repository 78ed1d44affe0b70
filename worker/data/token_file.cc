#include "worker/data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"

namespace topiary::data {

absl::StatusOr<TokenFormat> ParseTokenFormat(absl::string_view text) {
  if (text == "u16") return TokenFormat::kU16;
  if (text == "u32") return TokenFormat::kU32;
  if (text == "auto" || text.empty()) return TokenFormat::kAuto;
  return absl::InvalidArgumentError(absl::StrCat("data format '", text, "': expected u16, u32 or auto"));
}

TokenFormat FormatForVocab(int64_t vocab_size) { return vocab_size <= 65536 ? TokenFormat::kU16 : TokenFormat::kU32; }

absl::StatusOr<std::unique_ptr<TokenFile>> TokenFile::Open(const std::string& path, TokenFormat format,
                                                           int64_t vocab_size) {
  if (vocab_size <= 0) return absl::InvalidArgumentError("vocab_size must be positive");
  if (format == TokenFormat::kAuto) format = FormatForVocab(vocab_size);
  if (format == TokenFormat::kU16 && vocab_size > 65536) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": u16 tokens cannot hold a vocabulary of ", vocab_size));
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  struct stat st;
  ::fstat(fd, &st);
  std::unique_ptr<TokenFile> f(new TokenFile);
  f->path_ = path;
  f->bytes_ = static_cast<uint64_t>(st.st_size);
  f->width_ = format == TokenFormat::kU16 ? 2 : 4;
  f->vocab_size_ = vocab_size;
  if (f->bytes_ % f->width_ != 0) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": size ", f->bytes_, " bytes is not a whole number of ",
                                                   f->width_ * 8, "-bit tokens (truncated file?)"));
  }
  f->num_tokens_ = static_cast<int64_t>(f->bytes_ / f->width_);
  if (f->bytes_ > 0) {
    void* map = ::mmap(nullptr, f->bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
    }
    f->map_ = map;
  }
  ::close(fd);
  return f;
}

TokenFile::~TokenFile() {
  if (map_) ::munmap(map_, bytes_);
}

absl::Status TokenFile::Read(int64_t begin, int64_t n, int64_t* out) const {
  if (begin < 0 || n < 0 || begin > num_tokens_ || n > num_tokens_ - begin) {
    return absl::OutOfRangeError(
        absl::StrCat(path_, ": tokens [", begin, ", ", begin + n, ") are outside the file's ", num_tokens_, " tokens"));
  }
  const uint8_t* base = static_cast<const uint8_t*>(map_);
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = base + (begin + i) * width_;
    int64_t id = width_ == 2
                     ? (p[0] | (p[1] << 8))
                     : static_cast<int64_t>(static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                                            (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24));
    if (id >= vocab_size_) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": token ", begin + i, " has id ", id, ", not below the vocabulary size ", vocab_size_));
    }
    out[i] = id;
  }
  return absl::OkStatus();
}

absl::Status WriteTokenFile(const std::string& path, const std::vector<int64_t>& ids, TokenFormat format) {
  if (format == TokenFormat::kAuto) return absl::InvalidArgumentError("WriteTokenFile needs u16 or u32");
  const int width = format == TokenFormat::kU16 ? 2 : 4;
  const int64_t limit = width == 2 ? 65536 : (int64_t{1} << 32);
  std::string bytes(ids.size() * width, '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= limit) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", i, " id ", ids[i], " does not fit ", width * 8, " bits"));
    }
    for (int b = 0; b < width; ++b) bytes[i * width + b] = static_cast<char>((ids[i] >> (8 * b)) & 0xff);
  }
  return WriteFileAtomically(path, bytes);
}

}  // namespace topiary::data
