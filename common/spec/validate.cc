#include "common/spec/validate.h"

#include <limits.h>
#include <stdlib.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/units.h"

namespace topiary::spec {
namespace {

namespace fs = std::filesystem;

absl::Status Bad(const std::string& field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// The real path of the longest existing prefix of `p`, plus the rest.
std::string Resolve(const fs::path& p) {
  fs::path existing = p, rest;
  while (!existing.empty() && existing != existing.root_path()) {
    std::error_code ec;
    if (fs::exists(existing, ec)) break;
    rest = existing.filename() / rest;
    existing = existing.parent_path();
  }
  char buf[PATH_MAX];
  std::string base = realpath(existing.c_str(), buf) != nullptr ? std::string(buf) : existing.string();
  return (fs::path(base) / rest).lexically_normal().string();
}

bool Under(const std::string& path, const std::string& root) {
  std::string r = root;
  while (r.size() > 1 && r.back() == '/') r.pop_back();
  return path == r || absl::StartsWith(path, r == "/" ? r : r + "/");
}

absl::Status CheckData(const v1::DataSource& d, const std::vector<std::string>& roots, const std::string& field,
                       bool required) {
  if (d.path().empty()) return required ? Bad(field + ".path", "required") : absl::OkStatus();
  absl::Status st = CheckStoragePath(d.path(), roots, field + ".path");
  if (!st.ok()) return st;
  const std::string& f = d.format();
  if (!f.empty() && f != "u16" && f != "u32" && f != "text" && f != "jsonl" && f != "auto") {
    return Bad(field + ".format", absl::StrCat("'", f, "' is not u16, u32, text or jsonl"));
  }
  if (d.samples() < 0) return Bad(field + ".samples", "must not be negative");
  if (d.seq_len() < 0) return Bad(field + ".seq_len", "must not be negative");
  if (!d.tokenizer().empty()) {
    st = CheckStoragePath(d.tokenizer(), roots, field + ".tokenizer");
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status CheckCount(const std::string& text, const std::string& field, bool required) {
  if (text.empty()) return required ? Bad(field, "required") : absl::OkStatus();
  auto n = ParseCount(text, field);
  if (!n.ok()) return n.status();
  if (*n <= 0) return Bad(field, "must be positive");
  return absl::OkStatus();
}

absl::Status CheckTarget(const v1::PruneTarget& t, const std::string& field) {
  const std::pair<const char*, int64_t> sizes[] = {
      {"hidden_size", t.hidden_size()},           {"intermediate_size", t.intermediate_size()},
      {"num_attention_heads", t.num_attention_heads()}, {"num_key_value_heads", t.num_key_value_heads()},
      {"num_hidden_layers", t.num_hidden_layers()}};
  bool any = t.drop_layers_size() + t.drop_attention_size() + t.drop_mlp_size() > 0;
  for (const auto& [name, v] : sizes) {
    if (v < 0) return Bad(absl::StrCat(field, ".", name), "must be positive");
    any = any || v > 0;
  }
  if (!any) return Bad(field, "names no size to prune");
  if (t.num_attention_heads() > 0 && t.num_key_value_heads() > 0 &&
      t.num_attention_heads() % t.num_key_value_heads() != 0) {
    return Bad(field + ".num_attention_heads", "must be a multiple of num_key_value_heads");
  }
  for (int i = 0; i < t.drop_layers_size(); ++i) {
    if (t.drop_layers(i) < 0) return Bad(absl::StrCat(field, ".drop_layers[", i, "]"), "must not be negative");
  }
  return absl::OkStatus();
}

absl::Status CheckStage(const v1::StageSpec& s, const std::string& field, const std::vector<std::string>& roots) {
  switch (s.kind_case()) {
    case v1::StageSpec::kTeacherCorrection:
      if (s.teacher_correction().lr() < 0) return Bad(field + ".teacher_correction.lr", "must be positive");
      return CheckCount(s.teacher_correction().tokens(), field + ".teacher_correction.tokens", true);
    case v1::StageSpec::kImportance:
      for (int i = 0; i < s.importance().depth_size(); ++i) {
        if (s.importance().depth(i).empty()) return Bad(absl::StrCat(field, ".importance.depth[", i, "]"), "empty");
      }
      return absl::OkStatus();
    case v1::StageSpec::kPrune: {
      const v1::PruneStage& p = s.prune();
      if (p.has_target() == p.has_search()) return Bad(field + ".prune", "give exactly one of target and search");
      if (p.has_target()) return CheckTarget(p.target(), field + ".prune.target");
      const std::string sf = field + ".prune.search";
      if (p.search().params().empty()) return Bad(sf + ".params", "required");
      double v = 0;
      if (!absl::SimpleAtod(p.search().params(), &v) || !(v > 0)) {
        return Bad(sf + ".params", absl::StrCat("'", p.search().params(), "' is not a positive count or fraction"));
      }
      if (p.search().candidates() < 0) return Bad(sf + ".candidates", "must not be negative");
      if (!(p.search().tolerance() >= 0 && p.search().tolerance() < 1)) return Bad(sf + ".tolerance", "must be in [0, 1)");
      return CheckCount(p.search().probe_tokens(), sf + ".probe_tokens", false);
    }
    case v1::StageSpec::kDistill: {
      const v1::DistillStage& d = s.distill();
      const std::string df = field + ".distill";
      absl::Status st = CheckCount(d.tokens(), df + ".tokens", true);
      if (!st.ok()) return st;
      if (d.lr() < 0) return Bad(df + ".lr", "must be positive");
      if (d.min_lr() < 0 || (d.lr() > 0 && d.min_lr() > d.lr())) return Bad(df + ".min_lr", "must be in [0, lr]");
      if (d.warmup_steps() < 0) return Bad(df + ".warmup_steps", "must not be negative");
      if (d.global_batch() < 0) return Bad(df + ".global_batch", "must be positive");
      if (d.micro_batch() < 0) return Bad(df + ".micro_batch", "must be positive");
      if (d.global_batch() > 0 && d.micro_batch() > 0 && d.global_batch() % d.micro_batch() != 0) {
        return Bad(df + ".global_batch", "must be a multiple of micro_batch");
      }
      if (d.loss().temperature() < 0) return Bad(df + ".loss.temperature", "must be positive");
      if (d.loss().logits_kl() < 0 || d.loss().ce() < 0 || d.loss().hidden() < 0) {
        return Bad(df + ".loss", "weights must not be negative");
      }
      return absl::OkStatus();
    }
    case v1::StageSpec::kEvaluate:
      for (int i = 0; i < s.evaluate().tasks_size(); ++i) {
        absl::Status st = CheckStoragePath(s.evaluate().tasks(i), roots, absl::StrCat(field, ".evaluate.tasks[", i, "]"));
        if (!st.ok()) return st;
      }
      return absl::OkStatus();
    case v1::StageSpec::kExport: {
      const std::string& dt = s.export_().dtype();
      if (!dt.empty() && dt != "bfloat16" && dt != "float16" && dt != "float32" && dt != "bf16" && dt != "fp16" &&
          dt != "fp32") {
        return Bad(field + ".export.dtype", absl::StrCat("'", dt, "' is not bfloat16, float16 or float32"));
      }
      if (s.export_().path().empty()) return absl::OkStatus();  // default: under the job's directory
      return CheckStoragePath(s.export_().path(), roots, field + ".export.path");
    }
    case v1::StageSpec::KIND_NOT_SET:
      break;
  }
  return Bad(field, "empty stage: give one of teacher_correction, importance, prune, distill, evaluate, export");
}

}  // namespace

absl::Status CheckStoragePath(const std::string& path, const std::vector<std::string>& roots,
                              const std::string& field) {
  if (path.empty()) return Bad(field, "required");
  if (path[0] != '/') return Bad(field, absl::StrCat("'", path, "' is not an absolute path"));
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") return Bad(field, absl::StrCat("'", path, "' contains '..'"));
  }
  if (roots.empty()) return Bad(field, "no storage root is configured on the coordinator");
  const std::string resolved = Resolve(fs::path(path).lexically_normal());
  for (const std::string& root : roots) {
    if (Under(resolved, Resolve(fs::path(root).lexically_normal()))) return absl::OkStatus();
  }
  return Bad(field, absl::StrCat("'", path, "'", resolved != path ? absl::StrCat(" (resolves to ", resolved, ")") : "",
                                 " is outside the storage roots"));
}

absl::Status ValidateJobSpec(const v1::JobSpec& spec, const std::vector<std::string>& roots, const Limits& limits) {
  if (spec.name().empty()) return Bad("spec.name", "required");
  if (spec.name().size() > 128) return Bad("spec.name", "longer than 128 characters");
  absl::Status st = CheckStoragePath(spec.teacher().path(), roots, "spec.teacher.path");
  if (!st.ok()) return st;
  if (spec.stages_size() == 0) return Bad("spec.stages", "at least one stage is required");
  bool importance = false, pruned = false, train_data_needed = false;
  for (int i = 0; i < spec.stages_size(); ++i) {
    const std::string field = absl::StrCat("spec.stages[", i, "]");
    st = CheckStage(spec.stages(i), field, roots);
    if (!st.ok()) return st;
    const auto kind = spec.stages(i).kind_case();
    if (kind == v1::StageSpec::kImportance) importance = true;
    if (kind == v1::StageSpec::kPrune) {
      if (!importance) return Bad(field + ".prune", "needs an importance stage before it");
      pruned = true;
    }
    if (kind == v1::StageSpec::kDistill && !pruned) return Bad(field + ".distill", "needs a prune stage before it");
    if (kind == v1::StageSpec::kDistill || kind == v1::StageSpec::kTeacherCorrection) train_data_needed = true;
    if (kind == v1::StageSpec::kExport && i + 1 != spec.stages_size()) {
      return Bad(field + ".export", "must be the last stage");
    }
  }
  st = CheckData(spec.data().calibration(), roots, "spec.data.calibration", importance);
  if (!st.ok()) return st;
  st = CheckData(spec.data().train(), roots, "spec.data.train", train_data_needed);
  if (!st.ok()) return st;
  st = CheckData(spec.data().eval(), roots, "spec.data.eval", false);
  if (!st.ok()) return st;
  const v1::Resources& r = spec.resources();
  if (r.ranks() < 0 || r.ranks() > limits.max_ranks) {
    return Bad("spec.resources.ranks", absl::StrCat(r.ranks(), " outside [1, ", limits.max_ranks, "]"));
  }
  if (r.slots_per_rank() < 0) return Bad("spec.resources.slots_per_rank", "must be positive");
  if (spec.priority() < 0 || spec.priority() > limits.max_priority) {
    return Bad("spec.priority", absl::StrCat(spec.priority(), " outside [0, ", limits.max_priority, "]"));
  }
  if (spec.max_retries() < 0 || spec.max_retries() > limits.max_retries) {
    return Bad("spec.max_retries", absl::StrCat(spec.max_retries(), " outside [0, ", limits.max_retries, "]"));
  }
  for (const auto& [k, v] : spec.labels()) {
    if (k.empty() || k.size() > 63) return Bad("spec.labels", absl::StrCat("key '", k, "' must have 1 to 63 characters"));
    if (v.size() > 255) return Bad(absl::StrCat("spec.labels.", k), "longer than 255 characters");
  }
  return absl::OkStatus();
}

}  // namespace topiary::spec
