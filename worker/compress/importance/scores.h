// Importance scores, the product of importance estimation and the input of
// pruning and search (docs/design.md, "Importance"): every score is higher =
// more important. Saved as scores.json (scores_json.h). Plain value type.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

namespace topiary::compress {

struct Scores {
  at::Tensor heads;                                  // (L, NH)
  at::Tensor kv_groups;                              // (L, G)
  at::Tensor neurons;                                // (L, FF)
  at::Tensor channels;                               // (C)
  std::map<std::string, std::vector<double>> depth;  // metric -> per layer
  // Angular distance (Gromov et al.) of the window of n blocks starting at
  // each layer: n -> (L - n + 1) distances, lower = more removable.
  std::map<int64_t, std::vector<double>> angular_windows;
};

}  // namespace topiary::compress
