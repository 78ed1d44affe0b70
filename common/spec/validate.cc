#include "common/spec/validate.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/spec/stages.h"
#include "common/units.h"

namespace topiary::spec {
namespace {

absl::Status Bad(const std::string& field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

#define RETURN_IF_BAD(expr)            \
  do {                                 \
    absl::Status status_ = (expr);     \
    if (!status_.ok()) return status_; \
  } while (0)

// Finite and within [lo, hi].
absl::Status CheckReal(double v, const std::string& field, double lo, double hi) {
  if (!std::isfinite(v)) return Bad(field, "must be a finite number");
  if (v < lo || v > hi) return Bad(field, absl::StrCat(v, " is outside [", lo, ", ", hi, "]"));
  return absl::OkStatus();
}

absl::Status CheckInt(int64_t v, const std::string& field, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) return Bad(field, absl::StrCat(v, " is outside [", lo, ", ", hi, "]"));
  return absl::OkStatus();
}

template <typename Enum>
absl::Status CheckEnum(int v, bool (*valid)(int), const std::string& field) {
  if (!valid(v)) return Bad(field, absl::StrCat("unknown value ", v));
  return absl::OkStatus();
}

absl::Status CheckData(const v1::DataSource& d, const std::vector<std::string>& roots, const std::string& field,
                       bool required) {
  if (d.path().empty()) return required ? Bad(field + ".path", "required") : absl::OkStatus();
  RETURN_IF_BAD(CheckStoragePath(d.path(), roots, field + ".path"));
  RETURN_IF_BAD(CheckEnum<v1::DataFormat>(d.format(), v1::DataFormat_IsValid, field + ".format"));
  RETURN_IF_BAD(CheckInt(d.samples(), field + ".samples", 0, int64_t{1} << 40));
  RETURN_IF_BAD(CheckInt(d.seq_len(), field + ".seq_len", 0, 1 << 20));
  if (!d.tokenizer().empty()) RETURN_IF_BAD(CheckStoragePath(d.tokenizer(), roots, field + ".tokenizer"));
  return absl::OkStatus();
}

absl::Status CheckCount(const std::string& text, const std::string& field, bool required) {
  if (text.empty()) return required ? Bad(field, "required") : absl::OkStatus();
  if (text.size() > 32) return Bad(field, "longer than 32 characters");
  auto n = ParseCount(text, field);
  if (!n.ok()) return n.status();
  if (*n <= 0) return Bad(field, "must be positive");
  if (*n > int64_t{1} << 50) return Bad(field, absl::StrCat("'", text, "' is more than 1e15"));
  return absl::OkStatus();
}

absl::Status CheckMetric(const std::string& name, const std::string& field) {
  if (name.empty()) return absl::OkStatus();
  for (const std::string& m : DepthMetricNames()) {
    if (m == name) return absl::OkStatus();
  }
  return Bad(field, absl::StrCat("unknown depth metric '", name.substr(0, 64), "'"));
}

absl::Status CheckIndexList(const google::protobuf::RepeatedField<int64_t>& v, const std::string& field,
                            const Limits& limits) {
  if (v.size() > limits.max_list) return Bad(field, absl::StrCat("more than ", limits.max_list, " entries"));
  for (int i = 0; i < v.size(); ++i) RETURN_IF_BAD(CheckInt(v[i], absl::StrCat(field, "[", i, "]"), 0, 1 << 20));
  return absl::OkStatus();
}

absl::Status CheckTarget(const v1::PruneTarget& t, const std::string& field, const Limits& limits) {
  const std::pair<const char*, int64_t> sizes[] = {{"hidden_size", t.hidden_size()},
                                                   {"intermediate_size", t.intermediate_size()},
                                                   {"num_attention_heads", t.num_attention_heads()},
                                                   {"num_key_value_heads", t.num_key_value_heads()},
                                                   {"num_hidden_layers", t.num_hidden_layers()}};
  bool any = t.drop_layers_size() + t.drop_attention_size() + t.drop_mlp_size() > 0;
  for (const auto& [name, v] : sizes) {
    if (v < 0) return Bad(absl::StrCat(field, ".", name), "must be positive");
    if (v > (1 << 24)) return Bad(absl::StrCat(field, ".", name), "is larger than 16M");
    any = any || v > 0;
  }
  if (!any) return Bad(field, "names no size to prune");
  if (t.num_attention_heads() > 0 && t.num_key_value_heads() > 0 &&
      t.num_attention_heads() % t.num_key_value_heads() != 0) {
    return Bad(field + ".num_attention_heads", "must be a multiple of num_key_value_heads");
  }
  RETURN_IF_BAD(CheckIndexList(t.drop_layers(), field + ".drop_layers", limits));
  RETURN_IF_BAD(CheckIndexList(t.drop_attention(), field + ".drop_attention", limits));
  RETURN_IF_BAD(CheckIndexList(t.drop_mlp(), field + ".drop_mlp", limits));
  RETURN_IF_BAD(CheckMetric(t.depth_metric(), field + ".depth_metric"));
  return CheckInt(t.divisor(), field + ".divisor", 0, 1 << 16);
}

absl::Status CheckSearch(const v1::SearchSpec& s, const std::string& f) {
  if (s.params().empty()) return Bad(f + ".params", "required");
  double v = 0;
  if (s.params().size() > 32 || !absl::SimpleAtod(s.params(), &v) || !std::isfinite(v) || !(v > 0)) {
    auto n = ParseCount(s.params().substr(0, 32), f + ".params");
    if (!n.ok() || *n <= 0) {
      return Bad(f + ".params", absl::StrCat("'", s.params().substr(0, 32), "' is not a positive count or fraction"));
    }
  }
  RETURN_IF_BAD(CheckInt(s.candidates(), f + ".candidates", 0, kMaxCandidates));
  RETURN_IF_BAD(CheckReal(s.tolerance(), f + ".tolerance", 0, 0.999));
  RETURN_IF_BAD(CheckReal(s.min_depth(), f + ".min_depth", 0, 1));
  RETURN_IF_BAD(CheckReal(s.min_width(), f + ".min_width", 0, 1));
  RETURN_IF_BAD(CheckInt(s.hidden_divisor(), f + ".hidden_divisor", 0, 1 << 16));
  RETURN_IF_BAD(CheckInt(s.ffn_divisor(), f + ".ffn_divisor", 0, 1 << 16));
  RETURN_IF_BAD(CheckInt(s.eval_windows(), f + ".eval_windows", 0, 1 << 20));
  RETURN_IF_BAD(CheckMetric(s.depth_metric(), f + ".depth_metric"));
  return CheckCount(s.probe_tokens(), f + ".probe_tokens", false);
}

// The recipe fields teacher correction, distillation and streamline share.
template <typename Stage>
absl::Status CheckRecipe(const Stage& r, const std::string& f, const Limits& limits) {
  RETURN_IF_BAD(CheckCount(r.tokens(), f + ".tokens", true));
  RETURN_IF_BAD(CheckReal(r.lr(), f + ".lr", 0, 10));
  if (r.has_min_lr()) {
    RETURN_IF_BAD(CheckReal(r.min_lr(), f + ".min_lr", 0, 10));
    if (r.lr() > 0 && r.min_lr() > r.lr()) return Bad(f + ".min_lr", "must be in [0, lr]");
  }
  if (r.has_warmup_steps()) RETURN_IF_BAD(CheckInt(r.warmup_steps(), f + ".warmup_steps", 0, int64_t{1} << 40));
  RETURN_IF_BAD(CheckInt(r.global_batch(), f + ".global_batch", 0, 1 << 24));
  RETURN_IF_BAD(CheckInt(r.micro_batch(), f + ".micro_batch", 0, 1 << 16));
  if (r.global_batch() > 0 && r.micro_batch() > 0 && r.global_batch() % r.micro_batch() != 0) {
    return Bad(f + ".global_batch", "must be a multiple of micro_batch");
  }
  RETURN_IF_BAD(CheckInt(r.seq_len(), f + ".seq_len", 0, 1 << 20));
  if (r.has_weight_decay()) RETURN_IF_BAD(CheckReal(r.weight_decay(), f + ".weight_decay", 0, 10));
  if (r.has_clip()) RETURN_IF_BAD(CheckReal(r.clip(), f + ".clip", 0, 1e6));
  RETURN_IF_BAD(CheckInt(r.checkpoint_every(), f + ".checkpoint_every", 0, int64_t{1} << 40));
  RETURN_IF_BAD(CheckInt(r.eval_every(), f + ".eval_every", 0, int64_t{1} << 40));
  RETURN_IF_BAD(CheckEnum<v1::Dtype>(r.dtype(), v1::Dtype_IsValid, f + ".dtype"));
  RETURN_IF_BAD(CheckInt(r.train_last_blocks(), f + ".train_last_blocks", 0, 1 << 16));
  const v1::LoraSpec& lora = r.lora();
  RETURN_IF_BAD(CheckInt(lora.rank(), f + ".lora.rank", 0, 4096));
  RETURN_IF_BAD(CheckReal(lora.alpha(), f + ".lora.alpha", 0, 1e6));
  if (lora.targets_size() > limits.max_list) return Bad(f + ".lora.targets", "too many entries");
  for (int i = 0; i < lora.targets_size(); ++i) {
    const std::string& t = lora.targets(i);
    if (t != "q" && t != "k" && t != "v" && t != "o" && t != "gate" && t != "up" && t != "down") {
      return Bad(absl::StrCat(f, ".lora.targets[", i, "]"),
                 absl::StrCat("'", t.substr(0, 32), "' is not q, k, v, o, gate, up or down"));
    }
  }
  if (lora.rank() > 0 && r.train_last_blocks() > 0) {
    return Bad(f + ".lora", "cannot be combined with train_last_blocks");
  }
  return absl::OkStatus();
}

absl::Status CheckLoss(const v1::LossSpec& l, const std::string& f, const Limits& limits) {
  if (l.has_logits_kl()) RETURN_IF_BAD(CheckReal(l.logits_kl(), f + ".logits_kl", 0, 1e6));
  RETURN_IF_BAD(CheckReal(l.temperature(), f + ".temperature", 0, 1e3));
  RETURN_IF_BAD(CheckReal(l.ce(), f + ".ce", 0, 1e6));
  RETURN_IF_BAD(CheckReal(l.hidden(), f + ".hidden", 0, 1e6));
  RETURN_IF_BAD(CheckEnum<v1::HiddenLoss>(l.hidden_loss(), v1::HiddenLoss_IsValid, f + ".hidden_loss"));
  if (l.hidden_pairs_size() > limits.max_list) return Bad(f + ".hidden_pairs", "too many entries");
  for (int i = 0; i < l.hidden_pairs_size(); ++i) {
    const std::string pf = absl::StrCat(f, ".hidden_pairs[", i, "]");
    RETURN_IF_BAD(CheckInt(l.hidden_pairs(i).student(), pf + ".student", 0, 1 << 16));
    RETURN_IF_BAD(CheckInt(l.hidden_pairs(i).teacher(), pf + ".teacher", 0, 1 << 16));
  }
  if (l.hidden() > 0 && l.hidden_pairs_size() == 0) return Bad(f + ".hidden_pairs", "required when hidden > 0");
  if (l.has_logits_kl() && l.logits_kl() == 0 && l.ce() == 0 && l.hidden() == 0) {
    return Bad(f, "every loss weight is zero");
  }
  return absl::OkStatus();
}

absl::Status CheckStage(const v1::StageSpec& s, const std::string& field, const std::vector<std::string>& roots,
                        const Limits& limits) {
  switch (s.kind_case()) {
    case v1::StageSpec::kTeacherCorrection:
      return CheckRecipe(s.teacher_correction(), field + ".teacher_correction", limits);
    case v1::StageSpec::kImportance: {
      const v1::ImportanceStage& im = s.importance();
      const std::string f = field + ".importance";
      RETURN_IF_BAD(
          CheckEnum<v1::Aggregation>(im.width().batch_agg(), v1::Aggregation_IsValid, f + ".width.batch_agg"));
      RETURN_IF_BAD(CheckEnum<v1::Aggregation>(im.width().seq_agg(), v1::Aggregation_IsValid, f + ".width.seq_agg"));
      RETURN_IF_BAD(CheckEnum<v1::MlpActivation>(im.width().mlp_activation(), v1::MlpActivation_IsValid,
                                                 f + ".width.mlp_activation"));
      if (im.depth_size() > limits.max_list) return Bad(f + ".depth", "too many entries");
      for (int i = 0; i < im.depth_size(); ++i) {
        const std::string df = absl::StrCat(f, ".depth[", i, "]");
        if (im.depth(i).empty()) return Bad(df, "empty");
        RETURN_IF_BAD(CheckMetric(im.depth(i), df));
      }
      return CheckInt(im.batch(), f + ".batch", 0, 1 << 16);
    }
    case v1::StageSpec::kPrune: {
      const v1::PruneStage& p = s.prune();
      RETURN_IF_BAD(CheckEnum<v1::Dtype>(p.dtype(), v1::Dtype_IsValid, field + ".prune.dtype"));
      if (p.has_target() == p.has_search()) return Bad(field + ".prune", "give exactly one of target and search");
      if (p.has_target()) return CheckTarget(p.target(), field + ".prune.target", limits);
      return CheckSearch(p.search(), field + ".prune.search");
    }
    case v1::StageSpec::kDistill:
      RETURN_IF_BAD(CheckRecipe(s.distill(), field + ".distill", limits));
      return CheckLoss(s.distill().loss(), field + ".distill.loss", limits);
    case v1::StageSpec::kStreamline: {
      const v1::StreamlineStage& st = s.streamline();
      RETURN_IF_BAD(CheckRecipe(st, field + ".streamline", limits));
      RETURN_IF_BAD(CheckInt(st.drop(), field + ".streamline.drop", 1, 1 << 16));
      if (st.has_first()) RETURN_IF_BAD(CheckInt(st.first(), field + ".streamline.first", 0, 1 << 16));
      return absl::OkStatus();
    }
    case v1::StageSpec::kEvaluate: {
      const v1::EvaluateStage& e = s.evaluate();
      if (e.tasks_size() > limits.max_list) return Bad(field + ".evaluate.tasks", "too many entries");
      for (int i = 0; i < e.tasks_size(); ++i) {
        RETURN_IF_BAD(CheckStoragePath(e.tasks(i), roots, absl::StrCat(field, ".evaluate.tasks[", i, "]")));
      }
      RETURN_IF_BAD(CheckInt(e.max_windows(), field + ".evaluate.max_windows", 0, 1 << 24));
      return CheckInt(e.max_examples(), field + ".evaluate.max_examples", 0, 1 << 24);
    }
    case v1::StageSpec::kExport: {
      RETURN_IF_BAD(CheckEnum<v1::Dtype>(s.export_().dtype(), v1::Dtype_IsValid, field + ".export.dtype"));
      if (s.export_().path().empty()) return absl::OkStatus();  // default: under the job's directory
      return CheckStoragePath(s.export_().path(), roots, field + ".export.path");
    }
    case v1::StageSpec::KIND_NOT_SET:
      break;
  }
  return Bad(field,
             "empty stage: give one of teacher_correction, importance, prune, distill, streamline, evaluate, export");
}

// What the stages need from each other and from the data.
absl::Status CheckOrder(const v1::JobSpec& spec, const std::vector<std::string>& roots) {
  bool importance = false, pruned = false, train = false, search = false, evaluate_data = false;
  for (int i = 0; i < spec.stages_size(); ++i) {
    const std::string field = absl::StrCat("spec.stages[", i, "]");
    const v1::StageSpec& s = spec.stages(i);
    switch (s.kind_case()) {
      case v1::StageSpec::kImportance:
        importance = true;
        break;
      case v1::StageSpec::kPrune:
        if (!importance) return Bad(field + ".prune", "needs an importance stage before it");
        pruned = true;
        search = search || s.prune().has_search();
        break;
      case v1::StageSpec::kDistill:
        if (!pruned) return Bad(field + ".distill", "needs a prune or streamline stage before it");
        train = true;
        break;
      case v1::StageSpec::kTeacherCorrection:
        if (pruned) return Bad(field + ".teacher_correction", "must come before pruning");
        train = true;
        break;
      case v1::StageSpec::kStreamline:
        pruned = train = true;
        break;
      case v1::StageSpec::kEvaluate:
        evaluate_data = evaluate_data || s.evaluate().tasks_size() == 0;
        break;
      case v1::StageSpec::kExport:
        if (i + 1 != spec.stages_size()) return Bad(field + ".export", "must be the last stage");
        break;
      case v1::StageSpec::KIND_NOT_SET:
        break;
    }
  }
  RETURN_IF_BAD(CheckData(spec.data().calibration(), roots, "spec.data.calibration", importance));
  RETURN_IF_BAD(CheckData(spec.data().train(), roots, "spec.data.train", train));
  return CheckData(spec.data().eval(), roots, "spec.data.eval", search || evaluate_data);
}

}  // namespace

absl::Status ValidateJobSpec(const v1::JobSpec& spec, const std::vector<std::string>& roots, const Limits& limits) {
  if (spec.ByteSizeLong() > limits.max_spec_bytes) {
    return Bad("spec", absl::StrCat(spec.ByteSizeLong(), " bytes; at most ", limits.max_spec_bytes));
  }
  if (spec.name().empty()) return Bad("spec.name", "required");
  if (spec.name().size() > 128) return Bad("spec.name", "longer than 128 characters");
  RETURN_IF_BAD(CheckStoragePath(spec.teacher().path(), roots, "spec.teacher.path"));
  if (spec.stages_size() == 0) return Bad("spec.stages", "at least one stage is required");
  if (spec.stages_size() > limits.max_stages) {
    return Bad("spec.stages", absl::StrCat(spec.stages_size(), " stages; at most ", limits.max_stages));
  }
  for (int i = 0; i < spec.stages_size(); ++i) {
    RETURN_IF_BAD(CheckStage(spec.stages(i), absl::StrCat("spec.stages[", i, "]"), roots, limits));
  }
  RETURN_IF_BAD(CheckOrder(spec, roots));
  const v1::Resources& r = spec.resources();
  RETURN_IF_BAD(CheckInt(r.ranks(), "spec.resources.ranks", 0, limits.max_ranks));
  RETURN_IF_BAD(CheckInt(r.slots_per_rank(), "spec.resources.slots_per_rank", 0, limits.max_slots_per_rank));
  RETURN_IF_BAD(CheckInt(spec.priority(), "spec.priority", 0, limits.max_priority));
  RETURN_IF_BAD(CheckInt(spec.max_retries(), "spec.max_retries", 0, limits.max_retries));
  if (spec.labels_size() > limits.max_labels) {
    return Bad("spec.labels", absl::StrCat(spec.labels_size(), " labels; at most ", limits.max_labels));
  }
  for (const auto& [k, v] : spec.labels()) {
    if (k.empty() || k.size() > 63)
      return Bad("spec.labels", absl::StrCat("key '", k.substr(0, 64), "' must have 1 to 63 characters"));
    if (v.size() > 255) return Bad(absl::StrCat("spec.labels.", k), "longer than 255 characters");
  }
  return absl::OkStatus();
}

}  // namespace topiary::spec
