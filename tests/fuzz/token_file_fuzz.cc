// Fuzzes the token-file reader: the input (after one control byte choosing
// the format and the vocabulary) is written to a memory file and opened as
// the sampler opens it, then read in a few ranges, some outside the file.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "worker/data/token_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  using topiary::data::TokenFormat;
  const TokenFormat formats[] = {TokenFormat::kAuto, TokenFormat::kU16, TokenFormat::kU32};
  const TokenFormat format = formats[(data[0] & 3) % 3];
  const int64_t vocab = (data[0] & 4) ? 70000 : 300;
  const int fd = memfd_create("tokens", 0);
  if (fd < 0) return 0;
  if (size > 1 && write(fd, data + 1, size - 1) != static_cast<ssize_t>(size - 1)) {
    close(fd);
    return 0;
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  auto file = topiary::data::TokenFile::Open(path, format, vocab);
  if (file.ok()) {
    std::vector<int64_t> out(16);
    const int64_t n = (*file)->size();
    for (int64_t begin : {int64_t{0}, n / 2, n - 1, n, n + 5, int64_t{-1}}) {
      for (int64_t len : {int64_t{1}, int64_t{16}, int64_t{0}}) (void)(*file)->Read(begin, len, out.data());
    }
  }
  close(fd);
  return 0;
}
