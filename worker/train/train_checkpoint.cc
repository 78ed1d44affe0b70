#include "worker/train/train_checkpoint.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "worker/model/checkpoint.h"
#include "worker/model/safetensors.h"

namespace topiary::train {
namespace {

namespace fs = std::filesystem;

std::string ShardFile(int rank, int world) {
  return absl::StrFormat("optimizer-rank-%05d-of-%05d.safetensors", rank, world);
}

// Complete checkpoints, oldest first.
std::vector<std::string> Complete(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0 && name.find('.') == std::string::npos && e.is_directory()) {
      out.push_back(e.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

absl::Status WriteTrainCheckpoint(const std::string& dir, const TrainState& state, model::LlamaModel& model,
                                  const ShardedAdamW& optimizer, dist::Communicator& comm, int keep_last) {
  const std::string final_path = absl::StrFormat("%s/step-%08d", dir, state.step);
  const std::string tmp = final_path + ".tmp";
  if (comm.rank() == 0) {
    RETURN_IF_ERROR(RemoveAll(tmp));
    RETURN_IF_ERROR(MakeDirs(tmp));
    model::SaveOptions so;
    so.dtype = model.dtype();
    RETURN_IF_ERROR(model::SaveCheckpoint(model, tmp + "/model", so));
  }
  RETURN_IF_ERROR(comm.Barrier());  // the directory exists for every rank
  {
    auto shard = optimizer.ShardState();
    std::vector<model::SafetensorsWriter::Decl> decls;
    for (const auto& [name, t] : shard) decls.push_back({name, model::DType::kF32, {t.numel()}});
    ASSIGN_OR_RETURN(auto w, model::SafetensorsWriter::Create(tmp + "/" + ShardFile(comm.rank(), comm.world_size()),
                                                              decls, {{"step", std::to_string(state.step)}}));
    for (const auto& [name, t] : shard) {
      at::Tensor c = t.contiguous();
      RETURN_IF_ERROR(w->WriteNext(c.data_ptr(), c.numel() * 4));
    }
    RETURN_IF_ERROR(w->Finish());
  }
  RETURN_IF_ERROR(comm.Barrier());  // every shard is in
  if (comm.rank() == 0) {
    nlohmann::json j = {{"version", 1},
                        {"step", state.step},
                        {"tokens", state.tokens},
                        {"world_size", state.world_size},
                        {"seed", state.seed}};
    RETURN_IF_ERROR(WriteFileAtomically(tmp + "/state.json", j.dump(2) + "\n"));
    RETURN_IF_ERROR(RemoveAll(final_path));
    std::error_code ec;
    fs::rename(tmp, final_path, ec);
    if (ec) return absl::InternalError(absl::StrCat("checkpoint: rename ", tmp, ": ", ec.message()));
    std::vector<std::string> all = Complete(dir);
    for (size_t i = 0; i + std::max(1, keep_last) < all.size(); ++i) RETURN_IF_ERROR(RemoveAll(all[i]));
  }
  return comm.Barrier();  // nobody races ahead of the rename
}

absl::StatusOr<std::optional<std::string>> LatestTrainCheckpoint(const std::string& dir) {
  std::vector<std::string> all = Complete(dir);
  if (all.empty()) return std::optional<std::string>();
  return std::optional<std::string>(all.back());
}

absl::StatusOr<TrainState> LoadTrainCheckpoint(const std::string& path, model::LlamaModel& model,
                                               ShardedAdamW& optimizer, dist::Communicator& comm, uint64_t seed) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path + "/state.json", 1 << 20));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j.contains("world_size")) {
    return absl::InvalidArgumentError(absl::StrCat(path, "/state.json: not a training state"));
  }
  TrainState s;
  s.step = j.value("step", int64_t{0});
  s.tokens = j.value("tokens", int64_t{0});
  s.world_size = j.value("world_size", 1);
  s.seed = j.value("seed", uint64_t{0});
  if (s.world_size != comm.world_size()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": written by ", s.world_size, " ranks, resuming with ", comm.world_size()));
  }
  if (s.seed != seed) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": written with seed ", s.seed, ", resuming with ", seed));
  }
  ASSIGN_OR_RETURN(model::LlamaModel saved, model::LoadCheckpoint(path + "/model", model.dtype()));
  if (model::CountParams(saved.config).total() != model::CountParams(model.config).total()) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": the checkpointed model has another shape"));
  }
  ASSIGN_OR_RETURN(auto file, model::SafetensorsFile::Open(path + "/" + ShardFile(comm.rank(), comm.world_size())));
  std::map<std::string, at::Tensor> shard;
  for (const model::TensorInfo& info : file->tensors()) {
    if (info.dtype != model::DType::kF32) return absl::InvalidArgumentError(absl::StrCat(path, ": shard is not fp32"));
    shard[info.name] = at::from_blob(const_cast<uint8_t*>(file->Data(info)), info.shape, at::kFloat).clone();
  }
  RETURN_IF_ERROR(optimizer.LoadShardState(shard, s.step));  // writes the masters into `model`
  return s;
}

}  // namespace topiary::train
