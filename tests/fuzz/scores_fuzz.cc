// Fuzzes the scores.json parser against a small model shape (2 layers, 4
// heads over 2 KV groups, 8 neurons, 6 channels): the first byte picks
// whether the shape is that one or a one-layer one.
#include <cstddef>
#include <cstdint>

#include "worker/compress/importance/scores_parse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const topiary::compress::ScoresShape shape =
      data[0] & 1 ? topiary::compress::ScoresShape{1, 2, 1, 4, 3} : topiary::compress::ScoresShape{2, 4, 2, 8, 6};
  auto parsed =
      topiary::compress::ParseScoresJson(absl::string_view(reinterpret_cast<const char*>(data) + 1, size - 1), shape);
  if (parsed.ok() && parsed->heads && parsed->heads->size() != static_cast<size_t>(shape.layers * shape.heads)) {
    __builtin_trap();  // a matrix of another shape got through
  }
  return 0;
}
