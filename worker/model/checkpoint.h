// Hugging Face checkpoint directories (docs/design.md, "Models and checkpoints"):
//   config.json
//   model.safetensors, or shards model-0000k-of-0000n.safetensors with
//   model.safetensors.index.json ({"metadata": {...}, "weight_map": {name: file}})
//   tokenizer and generation files, copied unchanged.
//
// Loading maps each shard and converts tensor by tensor, so peak memory is the
// model once (plus the page cache). Every tensor's shape is checked against
// config.json. Saving streams tensor by tensor, converting one tensor at a time
// to the output dtype, and writes every file atomically. Blocking;
// thread-compatible.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/llama.h"

namespace topiary::model {

// Loads a model with weights converted to `dtype` (kFloat or kBFloat16),
// in memory of its own (writable: for training). Each tensor is copied out of
// the mapped file and the file's pages are dropped from this process before
// the next, so the peak is the model once plus one tensor.
absl::StatusOr<LlamaModel> LoadCheckpoint(const std::string& dir, at::ScalarType dtype);

// How OpenCheckpoint treats a tensor stored narrower than the compute dtype.
enum class Widen {
  kOnUse,   // keep it mapped; Forward widens each weight as it uses it (LlamaModel::compute_dtype)
  kAtLoad,  // convert it at load, one tensor at a time (repeated forwards pay no conversion)
};

// Opens a model for forward passes only (evaluation, importance, a teacher):
// tensors stored in `compute` are read-only views of the mapped files, used in
// place (no copy; clean file pages the kernel may reclaim). Tensors stored
// wider than `compute` are converted at load, one at a time; narrower ones as
// `widen` says. Writing to a weight of the result faults.
absl::StatusOr<LlamaModel> OpenCheckpoint(const std::string& dir, at::ScalarType compute, Widen widen = Widen::kOnUse);

// Maps a checkpoint without copying: every tensor is a read-only view of the
// mapped files in its stored dtype (writing to one faults). The files stay
// mapped while any view lives. Same validation as LoadCheckpoint. For
// streaming transforms (pruning) that read each tensor once.
absl::StatusOr<LlamaModel> MapCheckpoint(const std::string& dir);

// Drops the resident pages behind a view made by MapCheckpoint (they are
// read again from the page cache if touched). Call only on such views:
// on ordinary memory it would discard data.
void ReleaseMappedPages(const at::Tensor& mapped_view);

struct SaveOptions {
  at::ScalarType dtype = at::kBFloat16;     // kFloat, kHalf or kBFloat16
  int64_t max_shard_bytes = 5'000'000'000;  // one file up to this size; shards beyond
  std::string copy_files_from;              // a checkpoint dir whose tokenizer files are copied
  // fsync every file (and the directory) before it is renamed into place, so
  // that the checkpoint survives a machine crash once the call returns. Off,
  // files are still renamed into place whole but may be lost or empty after
  // a crash until the kernel writes them back (what `cp` gives).
  bool durable = true;
  // Write the weight files past the page cache (O_DIRECT, where the file
  // system allows it): no copy into the cache and no dirty pages, and a
  // source the caller is reading stays cached. Tensors taken whole from a
  // mapped checkpoint are then read with pread like selections. For large
  // outputs written once (a width prune).
  bool direct = false;
};

// Writes the model as a Hugging Face directory (created if missing).
absl::Status SaveCheckpoint(LlamaModel& model, const std::string& dir, const SaveOptions& options);

// One tensor for the checkpoint writer: `tensor` itself, or, made with
// Select, the selection tensor[rows][:, cols] of a 2-D tensor, which the
// writer gathers piece by piece into a small reused buffer as it writes it
// (the selection is never held whole: pruning's case).
struct ProducedTensor {
  ProducedTensor(at::Tensor t = at::Tensor()) : tensor(std::move(t)) {}  // NOLINT: implicit on purpose
  static ProducedTensor Select(at::Tensor matrix, std::vector<int64_t> rows, std::vector<int64_t> cols);
  at::Tensor tensor;
  bool selection = false;
  std::vector<int64_t> rows, cols;
};

// The selection as a tensor of its own (the tensor itself when none).
at::Tensor Materialize(const ProducedTensor& p);

// Produces tensor `index` of LlamaModel::ExpectedShapes(config), in any dtype.
// Called once per tensor, in order, up to three tensors ahead of the one
// being written (so that the reads of the next selection are queued behind
// the current one's); the writer drops each once it is written.
using TensorProducer = std::function<absl::StatusOr<ProducedTensor>(size_t index)>;

// Writes a checkpoint whose tensors are made a few at a time: peak memory is
// what `produce` holds for the tensors ahead plus one converted tensor (a
// selection in the output dtype read from a mapped checkpoint: a ring of read
// buffers and two pieces, a few tens of MB). SaveCheckpoint uses it.
absl::Status SaveCheckpointStreaming(const ModelConfig& config, const TensorProducer& produce, const std::string& dir,
                                     const SaveOptions& options);

// The files copied unchanged between checkpoints (tokenizer, generation).
const std::vector<std::string>& TokenizerFiles();

}  // namespace topiary::model
