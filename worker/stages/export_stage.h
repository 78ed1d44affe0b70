// The export stage: a model written as a plain Hugging Face directory in the
// requested dtype, with the tokenizer files and a model card README.md,
// streamed tensor by tensor from the mapped source and renamed into place
// whole (a crash leaves either nothing or the complete directory). A model
// that is not isomorphic (dropped sublayers) is refused unless the
// Topiary format is allowed. Blocking.
#pragma once

#include <ATen/core/ScalarType.h>

#include <string>

#include "absl/status/statusor.h"
#include "worker/model/config.h"
#include "worker/stages/context.h"

namespace topiary::stages {

struct ExportOptions {
  std::string model;  // source checkpoint
  std::string out;    // destination directory; must not exist (or be replaced with `replace`)
  at::ScalarType dtype = at::kBFloat16;
  bool allow_topiary_format = false;
  std::string model_card;  // README.md contents (empty: none)
  bool replace = false;    // replace an existing directory at `out`
  bool durable = true;
};

struct ExportResult {
  model::ModelConfig config;
  model::ParamCounts params;
  int64_t bytes = 0;  // on disk
};

absl::StatusOr<ExportResult> RunExport(const StageContext& context, const ExportOptions& options);

// Bytes of the regular files directly in `dir`.
int64_t DirectoryBytes(const std::string& dir);

}  // namespace topiary::stages
