#include "worker/job/layout.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace topiary::job {

absl::StatusOr<JobLayout> LayoutOf(const v1::Assignment& a) {
  const std::string& dir = a.storage_dir();
  const size_t slash = dir.rfind('/');
  if (slash == std::string::npos || slash == 0 || dir.substr(slash + 1) != a.stage()) {
    return absl::InvalidArgumentError(absl::StrCat("assignment: storage_dir '", dir, "' does not end in the stage"));
  }
  if (a.stage_index() < 0 || a.stage_index() >= a.spec().stages_size() ||
      a.stage_names_size() != a.spec().stages_size() || a.stage_names(a.stage_index()) != a.stage()) {
    return absl::InvalidArgumentError("assignment: stage_index and stage_names do not match the spec");
  }
  JobLayout l;
  l.job_dir = dir.substr(0, slash);
  l.stage = a.stage();
  l.output = dir;
  l.work = absl::StrCat(l.job_dir, "/.work/", a.stage());
  return l;
}

absl::StatusOr<Lineage> LineageOf(const v1::Assignment& a, const JobLayout& layout) {
  Lineage l;
  l.original = l.teacher = a.spec().teacher().path();
  l.models.emplace_back("teacher", l.teacher);
  for (int i = 0; i < a.stage_index(); ++i) {
    const v1::StageSpec& s = a.spec().stages(i);
    const std::string& name = a.stage_names(i);
    const std::string out = layout.OutputOf(name);
    switch (s.kind_case()) {
      case v1::StageSpec::kTeacherCorrection:
        l.teacher = out + "/model";
        l.models.emplace_back("corrected teacher", l.teacher);
        break;
      case v1::StageSpec::kImportance:
        l.scores = out + "/scores.json";
        break;
      case v1::StageSpec::kPrune:
        if (s.prune().has_search()) {
          auto it = a.stage_results().find(name);
          nlohmann::json r =
              it == a.stage_results().end() ? nlohmann::json() : nlohmann::json::parse(it->second, nullptr, false);
          if (!r.is_object() || !r.contains("best_task") || !r["best_task"].is_number_integer()) {
            return absl::InvalidArgumentError(absl::StrCat("stage ", name, " chose no candidate (its result is ",
                                                           it == a.stage_results().end() ? "missing" : it->second,
                                                           ")"));
          }
          l.student = absl::StrCat(out, "/probe-", r["best_task"].get<int>(), "/model");
        } else {
          l.student = out + "/model";
        }
        l.models.emplace_back("pruned", l.student);
        break;
      case v1::StageSpec::kDistill:
        l.student = out + "/model";
        l.models.emplace_back("distilled", l.student);
        break;
      case v1::StageSpec::kStreamline:
        l.student = out + "/model";
        l.models.emplace_back("streamlined", l.student);
        break;
      case v1::StageSpec::kEvaluate:
      case v1::StageSpec::kExport:
      case v1::StageSpec::KIND_NOT_SET:
        break;
    }
  }
  return l;
}

}  // namespace topiary::job
