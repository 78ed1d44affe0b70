#include "common/spec/stages.h"

#include <map>

#include "absl/strings/str_cat.h"

namespace topiary::spec {

const char* StageKindName(const v1::StageSpec& s) {
  switch (s.kind_case()) {
    case v1::StageSpec::kTeacherCorrection:
      return "teacher_correction";
    case v1::StageSpec::kImportance:
      return "importance";
    case v1::StageSpec::kPrune:
      return s.prune().has_search() ? "search" : "prune";
    case v1::StageSpec::kDistill:
      return "distill";
    case v1::StageSpec::kStreamline:
      return "streamline";
    case v1::StageSpec::kEvaluate:
      return "evaluate";
    case v1::StageSpec::kExport:
      return "export";
    case v1::StageSpec::KIND_NOT_SET:
      break;
  }
  return "stage";
}

std::vector<std::string> StageNames(const v1::JobSpec& spec) {
  std::vector<std::string> out;
  std::map<std::string, int> seen;
  for (const v1::StageSpec& s : spec.stages()) {
    std::string name = StageKindName(s);
    const int n = ++seen[name];
    if (n > 1) name = absl::StrCat(name, "-", n);
    out.push_back(name);
  }
  return out;
}

bool IsMultiRank(const v1::StageSpec& s) {
  return s.kind_case() == v1::StageSpec::kImportance || s.kind_case() == v1::StageSpec::kTeacherCorrection ||
         s.kind_case() == v1::StageSpec::kDistill || s.kind_case() == v1::StageSpec::kStreamline;
}

int TaskCount(const v1::StageSpec& s) {
  if (s.kind_case() != v1::StageSpec::kPrune || !s.prune().has_search()) return 1;
  const int64_t n = s.prune().search().candidates();
  if (n <= 0) return kDefaultCandidates;
  return static_cast<int>(std::min<int64_t>(n, kMaxCandidates));
}

const std::vector<std::string>& DepthMetricNames() {
  static const std::vector<std::string> names = {
      "block_influence", "angular_distance", "relative_l1", "relative_l2", "attention_influence",
      "mlp_influence",   "lm_loss",          "perplexity",  "taylor",      "magnitude_l1",
      "magnitude_l2",    "reverse_order",    "random"};
  return names;
}

}  // namespace topiary::spec
