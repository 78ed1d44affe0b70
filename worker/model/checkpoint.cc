#include "worker/model/checkpoint.h"

#include <torch/torch.h>

#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include <sys/mman.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "worker/model/gather.h"
#include "worker/model/safetensors.h"

namespace topiary::model {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

at::ScalarType ToScalarType(DType d) {
  switch (d) {
    case DType::kF32:
      return at::kFloat;
    case DType::kF16:
      return at::kHalf;
    case DType::kBF16:
      return at::kBFloat16;
  }
  return at::kFloat;
}

absl::StatusOr<DType> FromScalarType(at::ScalarType t) {
  if (t == at::kFloat) return DType::kF32;
  if (t == at::kHalf) return DType::kF16;
  if (t == at::kBFloat16) return DType::kBF16;
  return absl::InvalidArgumentError(absl::StrCat("cannot save dtype ", c10::toString(t)));
}

std::string TorchDtypeName(at::ScalarType t) {
  if (t == at::kHalf) return "float16";
  if (t == at::kBFloat16) return "bfloat16";
  return "float32";
}

// The shard files of a checkpoint, opened; and where each tensor lives.
struct OpenShards {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, std::pair<const SafetensorsFile*, const TensorInfo*>> where;
};

absl::StatusOr<OpenShards> OpenAllShards(const std::string& dir) {
  OpenShards out;
  std::vector<std::string> names;
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (fs::exists(index_path)) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path, 100 << 20));
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map missing or not an object"));
    }
    std::set<std::string> files;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map values must be file names"));
      std::string f = it.value().get<std::string>();
      if (f.find('/') != std::string::npos || f == ".." || f.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": shard name '", f, "' must be a plain file name"));
      }
      files.insert(f);
    }
    names.assign(files.begin(), files.end());
  } else if (fs::exists(dir + "/model.safetensors")) {
    names.push_back("model.safetensors");
  } else {
    return absl::NotFoundError(absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json"));
  }
  for (const std::string& name : names) {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(dir + "/" + name));
    for (const TensorInfo& info : file->tensors()) {
      if (!out.where.emplace(info.name, std::make_pair(file.get(), &info)).second) {
        return absl::InvalidArgumentError(absl::StrCat(dir, ": tensor '", info.name, "' appears in two shards"));
      }
    }
    out.files.push_back(std::move(file));
  }
  return out;
}

bool IsIgnorable(const std::string& name) {
  // Old Llama 2 exports carry the rotary tables; they are recomputed.
  return name.find("rotary_emb.inv_freq") != std::string::npos;
}

}  // namespace

const std::vector<std::string>& TokenizerFiles() {
  static const std::vector<std::string> kFiles = {"tokenizer.model",       "tokenizer.json",
                                                  "tokenizer_config.json", "special_tokens_map.json",
                                                  "added_tokens.json",     "generation_config.json"};
  return kFiles;
}

absl::StatusOr<LlamaModel> MapCheckpoint(const std::string& dir) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadConfig(dir));
  ASSIGN_OR_RETURN(OpenShards opened, OpenAllShards(dir));
  auto shards = std::make_shared<OpenShards>(std::move(opened));  // kept alive by every view
  LlamaModel m;
  m.config = config;
  m.layers.resize(config.num_hidden_layers);
  auto params = m.NamedParameters();
  auto shapes = LlamaModel::ExpectedShapes(config);
  std::set<std::string> used;
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& name = params[i].first;
    auto it = shards->where.find(name);
    if (it == shards->where.end()) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": tensor '", name, "' is missing"));
    }
    const auto [file, info] = it->second;
    if (info->shape != shapes[i].second) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: tensor '%s' has shape [%s] but config.json implies [%s]",
                                                        dir, name, absl::StrJoin(info->shape, ","),
                                                        absl::StrJoin(shapes[i].second, ",")));
    }
    *params[i].second = at::from_blob(
        const_cast<uint8_t*>(file->Data(*info)), info->shape, [shards](void*) {},
        at::TensorOptions().dtype(ToScalarType(info->dtype)));
    used.insert(name);
  }
  if (config.tie_word_embeddings) {
    m.lm_head = m.embed_tokens;
    used.insert("lm_head.weight");  // some tied exports still carry it
  }
  for (const auto& [name, loc] : shards->where) {
    if (!used.count(name) && !IsIgnorable(name)) {
      log::Warn(absl::StrCat(dir, ": ignoring unexpected tensor '", name, "'"));
    }
  }
  return m;
}

void ReleaseMappedPages(const at::Tensor& t) {
  if (!t.defined() || t.numel() == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t end = begin + static_cast<uintptr_t>(t.numel()) * t.element_size();
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;  // whole pages inside
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

absl::StatusOr<LlamaModel> LoadCheckpoint(const std::string& dir, at::ScalarType dtype) {
  ASSIGN_OR_RETURN(LlamaModel m, MapCheckpoint(dir));
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : m.NamedParameters()) {
    at::Tensor owned = t->to(dtype, /*non_blocking=*/false, /*copy=*/true);
    ReleaseMappedPages(*t);  // the file's pages leave this process as its copy arrives
    *t = std::move(owned);
  }
  if (m.config.tie_word_embeddings) m.lm_head = m.embed_tokens;
  return m;
}

absl::StatusOr<LlamaModel> OpenCheckpoint(const std::string& dir, at::ScalarType compute, Widen widen) {
  ASSIGN_OR_RETURN(LlamaModel m, MapCheckpoint(dir));
  torch::NoGradGuard no_grad;
  const int64_t compute_size = c10::elementSize(compute);
  bool kept_narrow = false;
  for (auto& [name, t] : m.NamedParameters()) {
    if (t->scalar_type() == compute) continue;  // used in place
    if (widen == Widen::kOnUse && t->element_size() < compute_size) {
      kept_narrow = true;
      continue;
    }
    at::Tensor converted = t->to(compute);
    ReleaseMappedPages(*t);
    *t = std::move(converted);
  }
  if (m.config.tie_word_embeddings) m.lm_head = m.embed_tokens;
  if (kept_narrow) m.compute_dtype = compute;
  return m;
}

ProducedTensor ProducedTensor::Select(at::Tensor matrix, std::vector<int64_t> rows, std::vector<int64_t> cols) {
  ProducedTensor p(std::move(matrix));
  p.selection = true;
  p.rows = std::move(rows);
  p.cols = std::move(cols);
  return p;
}

at::Tensor Materialize(const ProducedTensor& p) {
  if (!p.selection) return p.tensor;
  const at::Tensor in = p.tensor.contiguous();
  const int64_t R = static_cast<int64_t>(p.rows.size()), C = in.size(1);
  const bool all_cols = IsIdentity(p.cols, C);
  if (all_cols && IsIdentity(p.rows, in.size(0))) return p.tensor;
  at::Tensor out = at::empty({R, static_cast<int64_t>(p.cols.size())}, in.options());
  const int64_t grain = std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(1, C));
  const size_t row_bytes = p.cols.size() * in.element_size();
  at::parallel_for(0, R, grain, [&](int64_t b, int64_t e) {
    GatherRows(in.data_ptr(), C, in.element_size(), p.rows, p.cols, all_cols, b, e,
               static_cast<uint8_t*>(out.data_ptr()) + b * row_bytes);
  });
  return out;
}

namespace {

// Pieces of about this size are gathered and written in turn: small enough
// to stay in the cache between the gather and the write.
constexpr size_t kPieceBytes = 4 << 20;
// Source rows are read in ranges of at most this many bytes, into a ring of
// kReadSlots buffers, by kReaders threads (two reads in flight keep a disk
// busier than one).
constexpr size_t kStageBytes = 4 << 20;
constexpr int kReadSlots = 4, kReaders = 2;

// A selection the writer streams: gathered from the source a piece at a time.
bool Streamed(const ProducedTensor& p, at::ScalarType out) {
  return p.selection && p.tensor.scalar_type() == out && p.tensor.is_contiguous();
}

// Rows of the selection per piece written.
int64_t PieceRows(const ProducedTensor& p) {
  const size_t row_bytes = p.cols.size() * p.tensor.element_size();
  return static_cast<int64_t>(std::max<size_t>(1, kPieceBytes / std::max<size_t>(1, row_bytes)));
}

// Calls f(s, e, first, span) for each run [s, e) of selected rows in [r0, r1)
// that is read from the source in one range: increasing rows spanning at
// most kStageBytes of the source (the dropped rows between kept ones
// included: one sequential read), [first, first + span). A single row longer
// than kStageBytes is a run of its own with span > kStageBytes.
template <typename F>
void ForEachRun(const ProducedTensor& p, int64_t r0, int64_t r1, F&& f) {
  const auto* data = static_cast<const uint8_t*>(p.tensor.data_ptr());
  const size_t src_row = p.tensor.size(1) * p.tensor.element_size();
  for (int64_t s = r0; s < r1;) {
    int64_t e = s + 1;
    while (e < r1 && p.rows[e] > p.rows[e - 1] &&
           static_cast<size_t>(p.rows[e] - p.rows[s] + 1) * src_row <= kStageBytes)
      ++e;
    f(s, e, data + p.rows[s] * src_row, static_cast<size_t>(p.rows[e - 1] - p.rows[s] + 1) * src_row);
    s = e;
  }
}

// Queues the reads of a streamed selection, in the order FillSelection takes
// them; false when its source is not a mapped checkpoint (nothing queued).
bool QueueSelection(const ProducedTensor& p, ReadAhead& ahead) {
  if (!ahead.Begin(p.tensor.data_ptr(), p.tensor.nbytes())) return false;
  const int64_t R = static_cast<int64_t>(p.rows.size()), step = PieceRows(p);
  for (int64_t r0 = 0; r0 < R; r0 += step) {
    ForEachRun(p, r0, std::min(R, r0 + step), [&](int64_t, int64_t, const uint8_t* first, size_t span) {
      if (span <= kStageBytes) ahead.Queue(first, span);
    });
  }
  return true;
}

// Puts rows [r0, r1) of the selection into buf. When `queued`, each run's
// range was queued on `ahead` (QueueSelection) and is gathered from the
// bytes it read; otherwise, or when that read failed, the run is read
// through the source's mapping (MapRows then GatherRows).
void FillSelection(const ProducedTensor& p, bool all_cols, int64_t r0, int64_t r1, bool queued, ReadAhead& ahead,
                   uint8_t* buf) {
  const auto* data = static_cast<const uint8_t*>(p.tensor.data_ptr());
  const int64_t C = p.tensor.size(1);
  const size_t esz = p.tensor.element_size(), out_row = p.cols.size() * esz;
  std::vector<int64_t> local;
  ForEachRun(p, r0, r1, [&](int64_t s, int64_t e, const uint8_t*, size_t span) {
    uint8_t* out = buf + (s - r0) * out_row;
    if (const uint8_t* got = queued && span <= kStageBytes ? ahead.Take() : nullptr) {
      local.assign(p.rows.begin() + s, p.rows.begin() + e);
      for (int64_t& r : local) r -= p.rows[s];
      GatherRows(got, C, esz, local, p.cols, all_cols, 0, e - s, out);
    } else {
      MapRows(data, C, esz, p.rows, s, e);
      GatherRows(data, C, esz, p.rows, p.cols, all_cols, s, e, out);
    }
  });
}

// Writes the streamed selection `p` without materialising it: rows are
// gathered a piece at a time (FillSelection) on a second thread while the
// previous piece is written.
absl::Status WriteSelection(SafetensorsWriter& writer, const ProducedTensor& p, bool queued, ReadAhead& ahead) {
  const int64_t C = p.tensor.size(1);
  const size_t row_bytes = p.cols.size() * p.tensor.element_size();
  const bool all_cols = IsIdentity(p.cols, C);
  const size_t nbytes = p.rows.size() * row_bytes;
  const size_t piece = static_cast<size_t>(PieceRows(p)) * row_bytes;
  return writer.WriteNextInPieces(nbytes, piece, [&](uint8_t* buf, size_t offset, size_t len) {
    const int64_t r0 = static_cast<int64_t>(offset / row_bytes), r1 = r0 + static_cast<int64_t>(len / row_bytes);
    FillSelection(p, all_cols, r0, r1, queued, ahead, buf);
  });
}

}  // namespace

absl::Status SaveCheckpoint(LlamaModel& m, const std::string& dir, const SaveOptions& opt) {
  auto params = m.NamedParameters();
  return SaveCheckpointStreaming(
      m.config, [&](size_t i) -> absl::StatusOr<ProducedTensor> { return *params[i].second; }, dir, opt);
}

absl::Status SaveCheckpointStreaming(const ModelConfig& model_config, const TensorProducer& produce,
                                     const std::string& dir, const SaveOptions& opt) {
  RETURN_IF_ERROR(ValidateConfig(model_config));
  ASSIGN_OR_RETURN(DType out_dtype, FromScalarType(opt.dtype));
  RETURN_IF_ERROR(MakeDirs(dir));
  torch::NoGradGuard no_grad;
  const auto params = LlamaModel::ExpectedShapes(model_config);
  auto numel = [](const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  };
  // Assign tensors to shards by the size limit, keeping checkpoint order.
  std::vector<std::vector<size_t>> shards(1);
  int64_t shard_bytes = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    int64_t bytes = numel(params[i].second) * DTypeSize(out_dtype);
    if (!shards.back().empty() && shard_bytes + bytes > opt.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += bytes;
  }
  const size_t n = shards.size();
  json weight_map = json::object();
  int64_t total_bytes = 0;
  // Tensors are produced up to kLookahead ahead of the one being written, so
  // that the reads of the next streamed one are queued behind the current
  // one's and the reader never waits between them.
  struct Pending {
    ProducedTensor p;
    bool streamed = false, queued = false;
  };
  constexpr size_t kLookahead = 4;
  std::deque<Pending> pending;
  ReadAhead ahead(kStageBytes, kReadSlots, kReaders);  // destroyed first: its reads use `pending`'s sources
  size_t produced = 0;
  auto look_ahead = [&]() -> absl::Status {
    auto streamed_after_front = [&] {
      for (size_t k = 1; k < pending.size(); ++k) {
        if (pending[k].streamed) return true;
      }
      return false;
    };
    while (produced < params.size() && pending.size() < kLookahead && (pending.size() < 2 || !streamed_after_front())) {
      const size_t i = produced++;
      ASSIGN_OR_RETURN(ProducedTensor p, produce(i));
      const at::Tensor& base = p.tensor;
      std::vector<int64_t> shape = base.sizes().vec();
      if (p.selection) {
        bool in_range = base.dim() == 2;
        for (int64_t r : p.rows) in_range = in_range && r >= 0 && r < base.size(0);
        for (int64_t c : p.cols) in_range = in_range && c >= 0 && c < base.size(1);
        if (!in_range) {
          return absl::InternalError(absl::StrCat("save: tensor '", params[i].first, "' selects outside its source"));
        }
        shape = {static_cast<int64_t>(p.rows.size()), static_cast<int64_t>(p.cols.size())};
      }
      if (shape != params[i].second) {
        return absl::InternalError(absl::StrCat("save: tensor '", params[i].first, "' was produced with shape [",
                                                absl::StrJoin(shape, ","), "]"));
      }
      // Writing direct, a whole matrix of the output dtype is streamed as a
      // selection of all its rows and columns (read with pread, not copied
      // out of its mapping).
      if (opt.direct && !p.selection && base.dim() == 2 && base.scalar_type() == opt.dtype && base.is_contiguous() &&
          base.numel() > 0 && ahead.Begin(base.data_ptr(), base.nbytes())) {
        p = ProducedTensor::Select(base, AllOf(base.size(0)), AllOf(base.size(1)));
      }
      Pending next{std::move(p)};
      next.streamed = Streamed(next.p, opt.dtype);
      next.queued = next.streamed && QueueSelection(next.p, ahead);
      pending.push_back(std::move(next));
    }
    return absl::OkStatus();
  };
  for (size_t s = 0; s < n; ++s) {
    std::string file = n == 1 ? "model.safetensors" : absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, n);
    std::vector<SafetensorsWriter::Decl> decls;
    for (size_t i : shards[s]) {
      decls.push_back({params[i].first, out_dtype, params[i].second});
      weight_map[params[i].first] = file;
    }
    ASSIGN_OR_RETURN(auto writer,
                     SafetensorsWriter::Create(dir + "/" + file, decls, {{"format", "pt"}}, opt.durable, opt.direct));
    for (size_t i : shards[s]) {
      RETURN_IF_ERROR(look_ahead());  // tensor i is pending.front()
      Pending cur = std::move(pending.front());
      pending.pop_front();
      if (cur.streamed) {
        RETURN_IF_ERROR(WriteSelection(*writer, cur.p, cur.queued, ahead));
      } else {
        at::Tensor t = Materialize(cur.p).detach().to(opt.dtype).contiguous();  // one tensor at a time
        cur = Pending();
        RETURN_IF_ERROR(writer->WriteNext(t.data_ptr(), t.numel() * t.element_size()));
      }
      total_bytes += numel(params[i].second) * DTypeSize(out_dtype);
    }
    RETURN_IF_ERROR(writer->Finish());
  }
  // Remove weight files of an earlier save into the same directory.
  std::set<std::string> current;
  for (auto it = weight_map.begin(); it != weight_map.end(); ++it) current.insert(it.value().get<std::string>());
  if (n > 1) current.insert("model.safetensors.index.json");
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    bool weights = name == "model.safetensors.index.json" ||
                   (name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0);
    if (weights && !current.count(name)) fs::remove(entry.path());
  }
  if (n > 1) {
    json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    RETURN_IF_ERROR(WriteFileAtomically(dir + "/model.safetensors.index.json", index.dump(2) + "\n", opt.durable));
  }
  ModelConfig config = model_config;
  config.torch_dtype = TorchDtypeName(opt.dtype);
  RETURN_IF_ERROR(WriteFileAtomically(dir + "/config.json", ConfigToJson(config), opt.durable));
  if (!opt.copy_files_from.empty() && fs::absolute(opt.copy_files_from) != fs::absolute(dir)) {
    for (const std::string& f : TokenizerFiles()) {
      fs::path src = fs::path(opt.copy_files_from) / f;
      if (!fs::exists(src)) continue;
      ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(src.string()));
      RETURN_IF_ERROR(WriteFileAtomically(dir + "/" + f, bytes, opt.durable));
    }
  }
  return absl::OkStatus();
}

}  // namespace topiary::model
