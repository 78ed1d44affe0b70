// Fuzzes the safetensors header parser: the input is a whole file (8-byte
// length, JSON header, data), split the way SafetensorsFile::Open splits it.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>

#include "worker/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t n = 0;
  std::memcpy(&n, data, 8);
  if (n > size - 8) return 0;  // Open refuses a header longer than the file
  const absl::string_view header(reinterpret_cast<const char*>(data) + 8, n);
  std::map<std::string, std::string> metadata;
  auto tensors = topiary::model::ParseHeader(header, size - 8 - n, &metadata);
  if (tensors.ok()) {
    for (const auto& t : *tensors) {
      if (t.end > size - 8 - n || t.begin > t.end) __builtin_trap();  // what the parser promises
    }
  }
  return 0;
}
