#include "worker/job/spec_options.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/units.h"

namespace topiary::job {
namespace {

compress::Agg AggOf(v1::Aggregation a, compress::Agg fallback) {
  switch (a) {
    case v1::AGGREGATION_MEAN:
      return compress::Agg::kMean;
    case v1::AGGREGATION_L2:
      return compress::Agg::kL2;
    case v1::AGGREGATION_VAR:
      return compress::Agg::kVar;
    default:
      return fallback;
  }
}

template <typename Stage>
absl::StatusOr<Recipe> CommonRecipe(const Stage& s, const v1::JobSpec& spec, int world_size, double default_lr,
                                    const std::string& field) {
  Recipe out;
  train::TrainRecipe& r = out.recipe;
  r.seq_len = s.seq_len() > 0 ? s.seq_len() : spec.data().train().seq_len() > 0 ? spec.data().train().seq_len() : 256;
  r.global_batch = s.global_batch() > 0 ? s.global_batch() : 16;
  const int64_t per_rank = std::max<int64_t>(1, r.global_batch / std::max(1, world_size));
  int64_t micro = std::min<int64_t>(8, per_rank);
  while (micro > 1 && per_rank % micro != 0) --micro;
  r.micro_batch = s.micro_batch() > 0 ? s.micro_batch() : micro;
  r.lr = s.lr() > 0 ? s.lr() : default_lr;
  r.min_lr = s.has_min_lr() ? s.min_lr() : r.lr / 10;
  r.adamw.weight_decay = s.has_weight_decay() ? s.weight_decay() : 0.1;
  r.clip = s.has_clip() ? s.clip() : 1.0;
  r.seed = s.seed();
  r.log_every = 1;
  r.eval_every = s.eval_every();
  r.eval_windows = spec.data().eval().samples() > 0 ? spec.data().eval().samples() : 32;
  ASSIGN_OR_RETURN(out.tokens, ParseCount(s.tokens(), field + ".tokens"));
  r.steps = std::max<int64_t>(1, out.tokens / (r.global_batch * r.seq_len));
  r.warmup_steps = s.has_warmup_steps() ? s.warmup_steps() : r.steps / 20;
  out.dtype = DtypeOf(s.dtype(), at::kBFloat16);
  out.checkpoint_every = s.checkpoint_every() > 0 ? s.checkpoint_every() : 50;
  out.train_last_blocks = s.train_last_blocks();
  if (s.lora().rank() > 0) {
    out.use_lora = true;
    out.lora.rank = s.lora().rank();
    if (s.lora().alpha() > 0) out.lora.alpha = s.lora().alpha();
    if (s.lora().targets_size() > 0) out.lora.targets.assign(s.lora().targets().begin(), s.lora().targets().end());
  }
  return out;
}

}  // namespace

stages::DataOptions DataOf(const v1::DataSource& d) {
  stages::DataOptions o;
  o.path = d.path();
  switch (d.format()) {
    case v1::DATA_FORMAT_U16:
      o.format = "u16";
      break;
    case v1::DATA_FORMAT_U32:
      o.format = "u32";
      break;
    case v1::DATA_FORMAT_TEXT:
      o.format = "text";
      break;
    case v1::DATA_FORMAT_JSONL:
      o.format = "jsonl";
      break;
    default:
      o.format = "auto";
      break;
  }
  o.tokenizer = d.tokenizer();
  return o;
}

at::ScalarType DtypeOf(v1::Dtype d, at::ScalarType fallback) {
  switch (d) {
    case v1::DTYPE_BFLOAT16:
      return at::kBFloat16;
    case v1::DTYPE_FLOAT16:
      return at::kHalf;
    case v1::DTYPE_FLOAT32:
      return at::kFloat;
    default:
      return fallback;
  }
}

std::string DtypeName(at::ScalarType d) {
  if (d == at::kFloat) return "float32";
  if (d == at::kHalf) return "float16";
  return "bfloat16";
}

at::ScalarType DtypeOfConfig(const std::string& torch_dtype) {
  if (torch_dtype == "float32") return at::kFloat;
  if (torch_dtype == "float16") return at::kHalf;
  return at::kBFloat16;
}

compress::ImportanceOptions ImportanceOf(const v1::ImportanceStage& s, const v1::DataSource& calibration) {
  compress::ImportanceOptions o;
  o.agg.batch = AggOf(s.width().batch_agg(), compress::Agg::kL2);
  o.agg.seq = AggOf(s.width().seq_agg(), compress::Agg::kMean);
  o.mlp = s.width().mlp_activation() == v1::MLP_ACTIVATION_GATE_PROJ_OUTPUT ? compress::MlpActivation::kGateOutput
                                                                            : compress::MlpActivation::kDownProjInput;
  if (calibration.samples() > 0) o.samples = calibration.samples();
  if (calibration.seq_len() > 0) o.seq_len = calibration.seq_len();
  if (s.batch() > 0) o.batch = s.batch();
  o.seed = s.seed();
  if (s.depth_size() > 0) o.extra_depth.assign(s.depth().begin(), s.depth().end());
  return o;
}

compress::PruneTarget TargetOf(const v1::PruneTarget& t, bool redistribute_heads) {
  compress::PruneTarget o;
  o.hidden_size = t.hidden_size();
  o.intermediate_size = t.intermediate_size();
  o.num_attention_heads = t.num_attention_heads();
  o.num_key_value_heads = t.num_key_value_heads();
  o.num_hidden_layers = t.num_hidden_layers();
  if (!t.depth_metric().empty()) o.depth_metric = t.depth_metric();
  o.contiguous = t.contiguous();
  o.drop_layers.assign(t.drop_layers().begin(), t.drop_layers().end());
  o.drop_attention.assign(t.drop_attention().begin(), t.drop_attention().end());
  o.drop_mlp.assign(t.drop_mlp().begin(), t.drop_mlp().end());
  if (t.divisor() > 0) o.divisor = t.divisor();
  o.redistribute_heads = redistribute_heads;
  return o;
}

compress::SearchSpace SearchSpaceOf(const v1::SearchSpec& s, int probes) {
  compress::SearchSpace o;
  if (s.tolerance() > 0) o.tolerance = s.tolerance();
  if (s.min_depth() > 0) o.min_depth = s.min_depth();
  if (s.min_width() > 0) o.min_width = s.min_width();
  if (s.hidden_divisor() > 0) o.hidden_divisor = s.hidden_divisor();
  if (s.ffn_divisor() > 0) o.ffn_divisor = s.ffn_divisor();
  if (!s.depth_metric().empty()) o.depth_metric = s.depth_metric();
  o.max_candidates = probes;
  return o;
}

eval::EvalOptions EvalOf(const v1::DataSource& e, int64_t max_windows) {
  eval::EvalOptions o;
  o.seq_len = e.seq_len() > 0 ? e.seq_len() : 256;
  o.max_windows = max_windows > 0 ? max_windows : e.samples() > 0 ? e.samples() : 64;
  o.batch_size = 8;
  return o;
}

absl::StatusOr<Recipe> RecipeOf(const v1::TeacherCorrectionStage& s, const v1::JobSpec& spec, int world_size) {
  return CommonRecipe(s, spec, world_size, 2e-5, "teacher_correction");
}

absl::StatusOr<Recipe> RecipeOf(const v1::DistillStage& s, const v1::JobSpec& spec, int world_size) {
  return CommonRecipe(s, spec, world_size, 1e-4, "distill");
}

absl::StatusOr<Recipe> RecipeOf(const v1::StreamlineStage& s, const v1::JobSpec& spec, int world_size) {
  return CommonRecipe(s, spec, world_size, 1e-4, "streamline");
}

void LossOf(const v1::LossSpec& l, stages::TrainStageOptions* o) {
  o->kl_weight = l.has_logits_kl() ? l.logits_kl() : 1.0;
  o->kd.temperature = l.temperature() > 0 ? l.temperature() : 1.0;
  o->kd.scale_by_t2 = l.t2_scale();
  o->kd.ce_weight = l.ce();
  for (const v1::LayerPair& p : l.hidden_pairs()) o->hidden.pairs.emplace_back(p.student(), p.teacher());
  o->hidden.loss = l.hidden_loss() == v1::HIDDEN_LOSS_MSE ? train::HiddenLoss::kMse : train::HiddenLoss::kCosine;
  o->hidden.weight = l.hidden() > 0 ? l.hidden() : 1.0;
}

}  // namespace topiary::job
