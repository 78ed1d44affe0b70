#include "worker/stages/export_stage.h"

#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "worker/model/checkpoint.h"
#include "worker/model/errors.h"

namespace topiary::stages {

namespace fs = std::filesystem;

int64_t DirectoryBytes(const std::string& dir) {
  int64_t bytes = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) bytes += static_cast<int64_t>(e.file_size(ec));
  }
  return bytes;
}

absl::StatusOr<ExportResult> RunExport(const StageContext& ctx, const ExportOptions& o) {
  ExportResult out;
  RETURN_IF_ERROR(CatchTorch("export", [&]() -> absl::Status {
    ASSIGN_OR_RETURN(model::LlamaModel m, model::MapCheckpoint(o.model));  // views of the files: nothing copied yet
    if (!m.config.IsIsomorphic() && !o.allow_topiary_format) {
      return absl::FailedPreconditionError(
          absl::StrCat(o.model,
                       " is not isomorphic (dropped sublayers or a replacement block): a plain Hugging Face "
                       "runtime cannot load it; set topiary_format to export Topiary's own format"));
    }
    std::error_code ec;
    if (fs::exists(o.out, ec) && !o.replace) {
      return absl::AlreadyExistsError(absl::StrCat(o.out, ": already exists"));
    }
    const std::string parent = fs::path(o.out).parent_path().string();
    RETURN_IF_ERROR(MakeDirs(parent));
    const std::string tmp = absl::StrCat(o.out, ".tmp-", getpid());
    RETURN_IF_ERROR(RemoveAll(tmp));
    ctx.Phase("saving");
    model::SaveOptions so;
    so.dtype = o.dtype;
    so.copy_files_from = o.model;
    so.durable = o.durable;
    RETURN_IF_ERROR(model::SaveCheckpoint(m, tmp, so));
    if (!o.model_card.empty()) RETURN_IF_ERROR(WriteFileAtomically(tmp + "/README.md", o.model_card, o.durable));
    if (fs::exists(o.out, ec)) RETURN_IF_ERROR(RemoveAll(o.out));
    fs::rename(tmp, o.out, ec);
    if (ec) return absl::InternalError(absl::StrCat("export: rename to ", o.out, ": ", ec.message()));
    out.config = m.config;
    out.params = model::CountParams(m.config);
    out.bytes = DirectoryBytes(o.out);
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace topiary::stages
