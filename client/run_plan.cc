#include "client/run_plan.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/spec/stages.h"
#include "common/status_macros.h"
#include "common/units.h"
#include "worker/compress/search/search.h"
#include "worker/job/memory.h"
#include "worker/job/spec_options.h"
#include "worker/model/checkpoint.h"
#include "worker/model/errors.h"
#include "worker/stages/data.h"
#include "worker/stages/search_stage.h"
#include "worker/train/objectives.h"

namespace topiary::cli {
namespace {

// Seconds per token of a model of `config`, measured on proxies of one and
// two blocks: head + L * block.
struct Speed {
  double forward = 0;  // forward only (inference, statistics)
  double train = 0;    // forward + backward
};

// The fastest of three runs after a warm-up: another process sharing the
// cores only adds time, and one run under such load made the estimate
// several times too long.
double TimeBest(const std::function<void()>& fn) {
  fn();  // warm-up
  double best = 1e300;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// Models up to this many parameters are timed whole; larger ones on proxies
// of one and two blocks (the difference, times the layers, plus the rest),
// so a large teacher is never allocated for the estimate.
constexpr int64_t kTimedWhole = 200'000'000;

Speed Measure(model::ModelConfig c, at::ScalarType dtype, int64_t B, int64_t T) {
  auto at_depth = [&](int64_t layers) {
    model::ModelConfig p = c;
    p.num_hidden_layers = layers;
    if (layers != c.num_hidden_layers) {
      p.has_attention.clear();
      p.has_mlp.clear();
    }
    model::LlamaModel m = model::InitModel(p, 0, dtype);
    at::Tensor tokens = torch::randint(0, p.vocab_size, {B, T}, at::kLong);
    data::Batch batch;
    batch.inputs = tokens;
    batch.targets = torch::randint(0, p.vocab_size, {B, T}, at::kLong);
    Speed s;
    s.forward = TimeBest([&] {
      torch::NoGradGuard no_grad;
      (void)model::Forward(m, tokens);
    });
    for (auto& [name, t] : m.NamedParameters()) t->requires_grad_(true);
    s.train = TimeBest([&] { (void)train::ForwardBackwardCe(m, batch, 1.0); });
    return s;
  };
  const double tokens = static_cast<double>(B * T), L = static_cast<double>(c.num_hidden_layers);
  if (model::CountParams(c).total() <= kTimedWhole) {
    const Speed whole = at_depth(c.num_hidden_layers);
    return Speed{whole.forward / tokens, whole.train / tokens};
  }
  const Speed one = at_depth(1), two = at_depth(2);
  auto per_token = [&](double t1, double t2) { return std::max(0.0, t1 + (L - 1) * std::max(0.0, t2 - t1)) / tokens; };
  return Speed{per_token(one.forward, two.forward), per_token(one.train, two.train)};
}

// The recipe a search's probes train with: the next distill stage's (as
// the worker's ProbeRecipe), else the defaults.
v1::DistillStage ProbeDistill(const v1::JobSpec& spec, int search_stage) {
  for (int k = search_stage + 1; k < spec.stages_size(); ++k) {
    if (spec.stages(k).has_distill()) return spec.stages(k).distill();
  }
  v1::DistillStage defaults;
  defaults.set_tokens("1");
  return defaults;
}

std::string Seconds(double s) {
  if (s < 90) return absl::StrFormat("%.0f s", s);
  if (s < 5400) return absl::StrFormat("%.1f min", s / 60);
  return absl::StrFormat("%.1f h", s / 3600);
}

std::string Shape(const model::ModelConfig& c) {
  const model::ParamCounts p = model::CountParams(c);
  return absl::StrFormat("hidden %d, MLP %d, heads %d over %d KV groups, %d layers: %s parameters", c.hidden_size,
                         c.intermediate_size, c.num_attention_heads, c.num_key_value_heads, c.num_hidden_layers,
                         FormatCount(static_cast<double>(p.total())));
}

double Bytes(const model::ModelConfig& c, const std::string& dtype) {
  return static_cast<double>(model::CountParams(c).total()) * job::DtypeBytes(dtype);
}

int64_t CountLines(const std::string& path) {
  std::ifstream in(path);
  int64_t n = 0;
  std::string line;
  while (n < 1000000 && std::getline(in, line)) n += !line.empty();
  return n;
}

class Planner {
 public:
  Planner(const v1::JobSpec& spec, const PlanOptions& o) : spec_(spec), o_(o) {}

  double total() const { return total_; }
  double scalable() const { return scalable_; }

  absl::StatusOr<std::string> Run() {
    absl::StatusOr<model::ModelConfig> teacher = model::LoadConfig(spec_.teacher().path());
    if (!teacher.ok())
      return absl::InvalidArgumentError(absl::StrCat("spec.teacher.path: ", teacher.status().message()));
    teacher_ = *teacher;
    student_ = teacher_;
    const int ranks = std::max(1, spec_.resources().ranks());
    Line(absl::StrFormat("plan of job '%s' on %d worker(s) x %d slot(s), %d rank(s) for multi-rank stages",
                         spec_.name(), o_.workers, o_.slots_per_worker, ranks));
    Line(absl::StrCat("teacher ", spec_.teacher().path(), ": ", Shape(teacher_), ", ",
                      job::FormatBytes(Bytes(teacher_, teacher_.torch_dtype == "float32" ? "fp32" : "bf16")), " (",
                      teacher_.torch_dtype, ")"));
    const std::vector<std::string> names = spec::StageNames(spec_);
    for (int i = 0; i < spec_.stages_size(); ++i) {
      RETURN_IF_ERROR(Stage(i, names[i], ranks));
    }
    Line(absl::StrCat(
        "estimated total: ", Seconds(total_),
        o_.measure ? absl::StrFormat(" (from steps measured now on %d thread(s) a rank)", at::get_num_threads()) : ""));
    if (o_.measure) {
      Line(absl::StrFormat("of which token budgets set: %.0f s; the rest: %.0f s", scalable_, total_ - scalable_));
    }
    return out_;
  }

 private:
  void Line(const std::string& s) { absl::StrAppend(&out_, s, "\n"); }

  const Speed& SpeedOf(const model::ModelConfig& c, at::ScalarType dtype, int64_t B, int64_t T) {
    const std::string key = absl::StrCat(c.hidden_size, ":", c.intermediate_size, ":", c.num_attention_heads, ":",
                                         c.num_hidden_layers, ":", static_cast<int>(dtype), ":", B, ":", T);
    auto it = speeds_.find(key);
    if (it != speeds_.end()) return it->second;
    Speed s;
    if (o_.measure) s = Measure(c, dtype, std::min<int64_t>(B, 4), std::min<int64_t>(T, 256));
    return speeds_[key] = s;
  }

  void Estimate(double seconds, const std::string& what, bool scalable = false) {
    total_ += seconds;
    if (scalable) scalable_ += seconds;
    if (o_.measure) Line(absl::StrCat("     time: ~", Seconds(seconds), " (", what, ")"));
  }

  absl::Status Stage(int i, const std::string& name, int ranks) {
    const v1::StageSpec& s = spec_.stages(i);
    const bool multi = spec::IsMultiRank(s);
    const std::string where = multi ? absl::StrCat(ranks, " rank(s)") : "1 rank";
    switch (s.kind_case()) {
      case v1::StageSpec::kTeacherCorrection: {
        ASSIGN_OR_RETURN(job::Recipe r, job::RecipeOf(s.teacher_correction(), spec_, ranks));
        Training(i, name, where, r, teacher_, nullptr, ranks, "CE on the teacher");
        break;
      }
      case v1::StageSpec::kImportance: {
        const compress::ImportanceOptions o = job::ImportanceOf(s.importance(), spec_.data().calibration());
        Line(absl::StrFormat("  %d. %s (%s): %d sequences x %d tokens, depth metrics %s", i + 1, name, where, o.samples,
                             o.seq_len, absl::StrJoin(o.extra_depth, ", ")));
        Line(absl::StrCat("     memory per rank: ",
                          job::ForwardMemory(teacher_, nullptr, "fp32", o.batch, o.seq_len).Describe()));
        double passes = 1;
        for (const std::string& m : o.extra_depth) {
          if (m == "lm_loss" || m == "perplexity") passes += static_cast<double>(teacher_.num_hidden_layers);
          if (m == "taylor") passes += 3;
        }
        Estimate(SpeedOf(teacher_, at::kFloat, o.batch, o.seq_len).forward * o.samples * o.seq_len * passes /
                     (multi ? ranks : 1),
                 absl::StrFormat("%.0f forward passes over the calibration set", passes));
        break;
      }
      case v1::StageSpec::kPrune:
        if (s.prune().has_search()) return Search(i, name, s.prune().search(), ranks);
        return Prune(i, name, s.prune());
      case v1::StageSpec::kDistill: {
        ASSIGN_OR_RETURN(job::Recipe r, job::RecipeOf(s.distill(), spec_, ranks));
        Training(i, name, where, r, student_, &teacher_, ranks, "KD from the teacher");
        break;
      }
      case v1::StageSpec::kStreamline: {
        ASSIGN_OR_RETURN(job::Recipe r, job::RecipeOf(s.streamline(), spec_, ranks));
        model::ModelConfig shorter = student_;
        shorter.num_hidden_layers -= std::max<int64_t>(0, s.streamline().drop() - 1);
        Training(i, name, where, r, shorter, &student_, ranks, "a replacement block");
        student_ = shorter;
        break;
      }
      case v1::StageSpec::kEvaluate: {
        const eval::EvalOptions e = job::EvalOf(spec_.data().eval(), s.evaluate().max_windows());
        const int models = models_;
        int64_t examples = 0;
        for (const std::string& t : s.evaluate().tasks()) {
          const int64_t n = CountLines(t);
          examples += s.evaluate().max_examples() > 0 ? std::min(n, s.evaluate().max_examples()) : n;
        }
        Line(absl::StrFormat("  %d. %s (1 rank): %d model(s) on %d windows of %d tokens%s", i + 1, name, models,
                             spec_.data().eval().path().empty() ? 0 : e.max_windows, e.seq_len,
                             examples > 0 ? absl::StrFormat(", %d task examples", examples) : ""));
        Line(absl::StrCat("     memory: ",
                          job::ForwardMemory(teacher_, &teacher_, "fp32", e.batch_size, e.seq_len).Describe()));
        const double tokens = static_cast<double>(e.max_windows * e.seq_len) * 2 + examples * 4.0 * 64;
        Estimate(SpeedOf(teacher_, at::kFloat, e.batch_size, e.seq_len).forward * tokens * models,
                 "forward passes of every model and its teacher");
        break;
      }
      case v1::StageSpec::kExport: {
        const std::string dtype = s.export_().dtype() == v1::DTYPE_FLOAT32 ? "fp32" : "bf16";
        Line(absl::StrFormat("  %d. %s (1 rank): %s to %s, %s", i + 1, name, Shape(student_),
                             s.export_().path().empty() ? "<storage>/jobs/<job>/export/model" : s.export_().path(),
                             job::FormatBytes(Bytes(student_, dtype))));
        Estimate(Bytes(student_, dtype) / 5e8, "writing at ~500 MB/s");
        break;
      }
      case v1::StageSpec::KIND_NOT_SET:
        break;
    }
    return absl::OkStatus();
  }

  void Training(int i, const std::string& name, const std::string& where, const job::Recipe& rc,
                const model::ModelConfig& model, const model::ModelConfig* teacher, int ranks, const char* what) {
    const train::TrainRecipe& r = rc.recipe;
    Line(absl::StrFormat("  %d. %s (%s): %s, %s tokens = %d steps of %d x %d tokens, lr %g, %s", i + 1, name, where,
                         what, FormatCount(static_cast<double>(rc.tokens)), r.steps, r.global_batch, r.seq_len, r.lr,
                         rc.dtype == at::kFloat ? "fp32" : "bf16"));
    Line(absl::StrCat("     memory per rank: ",
                      job::TrainingMemory(model, teacher, rc.dtype == at::kFloat ? "fp32" : "bf16", ranks,
                                          r.micro_batch, r.seq_len, rc.use_lora)
                          .Describe()));
    const double tokens = static_cast<double>(r.steps * r.global_batch * r.seq_len);
    double per_token = SpeedOf(model, rc.dtype, r.micro_batch, r.seq_len).train;
    if (teacher != nullptr) per_token += SpeedOf(*teacher, rc.dtype, r.micro_batch, r.seq_len).forward;
    per_token /= ranks;  // data parallel: each rank takes its share of every batch
    Estimate(
        per_token * tokens,
        absl::StrFormat("%s tokens/s measured on %d rank(s)", FormatCount(per_token > 0 ? 1 / per_token : 0), ranks),
        rc.tokens > 0);
    if (teacher != nullptr || rc.tokens > 0) ++models_;
  }

  absl::Status Prune(int i, const std::string& name, const v1::PruneStage& p) {
    const compress::PruneTarget t = job::TargetOf(p.target(), p.head_redistribution());
    RETURN_IF_ERROR(compress::ValidateTarget(teacher_, t));
    model::ModelConfig c = teacher_;
    if (t.hidden_size > 0) c.hidden_size = t.hidden_size;
    if (t.intermediate_size > 0) c.intermediate_size = t.intermediate_size;
    if (t.num_attention_heads > 0) c.num_attention_heads = t.num_attention_heads;
    if (t.num_key_value_heads > 0) c.num_key_value_heads = t.num_key_value_heads;
    if (t.num_hidden_layers > 0) c.num_hidden_layers = t.num_hidden_layers;
    c.num_hidden_layers -= static_cast<int64_t>(t.drop_layers.size());
    student_ = c;
    ++models_;
    Line(absl::StrFormat("  %d. %s (1 rank): to %s (%.1f%% of the teacher), %s", i + 1, name, Shape(c),
                         100.0 * model::CountParams(c).total() / model::CountParams(teacher_).total(),
                         job::FormatBytes(Bytes(c, "bf16"))));
    Estimate((Bytes(teacher_, "bf16") + Bytes(c, "bf16")) / 5e8, "streaming at ~500 MB/s");
    return absl::OkStatus();
  }

  absl::Status Search(int i, const std::string& name, const v1::SearchSpec& s, int ranks) {
    const int probes = spec::TaskCount(spec_.stages(i));
    compress::SearchSpace space = job::SearchSpaceOf(s, probes);
    ASSIGN_OR_RETURN(space.budget, stages::ParseBudget(s.params(), model::CountParams(teacher_).total(),
                                                       absl::StrCat("spec.stages[", i, "].prune.search.params")));
    ASSIGN_OR_RETURN(std::vector<compress::Candidate> candidates, compress::EnumerateCandidates(teacher_, space));
    int64_t probe_tokens = 0;
    if (!s.probe_tokens().empty()) {
      ASSIGN_OR_RETURN(probe_tokens, ParseCount(s.probe_tokens(), "search.probe_tokens"));
    }
    const int parallel = std::max(1, std::min(probes, o_.workers * o_.slots_per_worker));
    Line(absl::StrFormat(
        "  %d. %s: %d probe(s), %d at a time, within %.0f%% of %s parameters; %s", i + 1, name, probes, parallel,
        space.tolerance * 100, FormatCount(static_cast<double>(space.budget)),
        probe_tokens > 0
            ? absl::StrCat("each distilled ", FormatCount(static_cast<double>(probe_tokens)), " tokens, then scored")
            : "each scored zero-shot"));
    for (size_t k = 0; k < candidates.size(); ++k) {
      Line(absl::StrFormat("     probe %d: %s, %.1f%%, %s", k, Shape(candidates[k].config),
                           100.0 * candidates[k].params / model::CountParams(teacher_).total(),
                           job::FormatBytes(Bytes(candidates[k].config, "bf16"))));
    }
    if (candidates.size() < static_cast<size_t>(probes)) {
      Line(absl::StrFormat("     (the grid has %d shape(s) for %d probes: the others have nothing to do)",
                           candidates.size(), probes));
    }
    if (candidates.empty()) return absl::OkStatus();
    student_ = candidates.front().config;
    ++models_;
    const eval::EvalOptions e = job::EvalOf(spec_.data().eval(), s.eval_windows() > 0 ? s.eval_windows() : 16);
    const double scoring = SpeedOf(teacher_, at::kFloat, e.batch_size, e.seq_len).forward * e.max_windows * e.seq_len;
    double distilling = 0;
    if (probe_tokens > 0) {  // probes train with the recipe of the next distill stage, on one rank
      ASSIGN_OR_RETURN(job::Recipe rc, job::RecipeOf(ProbeDistill(spec_, i), spec_, 1));
      distilling = probe_tokens * (SpeedOf(student_, rc.dtype, rc.recipe.micro_batch, rc.recipe.seq_len).train +
                                   SpeedOf(teacher_, rc.dtype, rc.recipe.micro_batch, rc.recipe.seq_len).forward);
    }
    // Probes run `parallel` at a time, each on one rank's share of the cores.
    const double rounds = std::ceil(static_cast<double>(candidates.size()) / parallel);
    Line(absl::StrCat("     memory per probe: ",
                      job::TrainingMemory(student_, &teacher_, "bf16", 1, 8, e.seq_len, false).Describe()));
    Estimate(scoring * rounds, "every probe's scoring");
    if (distilling > 0) Estimate(distilling * rounds, "every probe's distillation", true);
    return absl::OkStatus();
  }

  const v1::JobSpec& spec_;
  const PlanOptions& o_;
  model::ModelConfig teacher_, student_;
  int models_ = 1;  // models the evaluate stage scores (the teacher, then each made)
  double total_ = 0;
  double scalable_ = 0;
  std::map<std::string, Speed> speeds_;
  std::string out_;
};

}  // namespace

absl::StatusOr<Plan> PlanJob(const v1::JobSpec& spec, const PlanOptions& options) {
  Plan out;
  RETURN_IF_ERROR(CatchTorch("plan", [&]() -> absl::Status {
    // Steps are timed as a rank runs them: on its share of the cores (a
    // worker gives each slot cores / slots threads), the share a stage's
    // ranks then use at once. Timed on every core instead, with another
    // process on the machine, the estimate came out several times too long.
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    stages::SetThreads(std::max(1, cores / std::max(1, options.slots_per_worker)));
    Planner p(spec, options);
    ASSIGN_OR_RETURN(out.text, p.Run());
    out.seconds = p.total();
    out.scalable_seconds = p.scalable();
    return absl::OkStatus();
  }));
  return out;
}

namespace {

// `tokens` times `factor`, at least `floor`, as a count string.
std::string Scaled(const std::string& tokens, double factor, int64_t floor, const std::string& field,
                   std::vector<std::string>* changes) {
  absl::StatusOr<int64_t> n = ParseCount(tokens, field);
  if (!n.ok() || *n <= 0) return tokens;  // validated before; nothing to scale
  const int64_t scaled = std::max<int64_t>(floor, static_cast<int64_t>(static_cast<double>(*n) * factor));
  if (scaled >= *n) return tokens;
  changes->push_back(absl::StrCat(field, ": ", tokens, " -> ", FormatCount(static_cast<double>(scaled))));
  return std::to_string(scaled);
}

template <typename Stage>
void ScaleTraining(Stage* t, const v1::JobSpec& spec, double factor, const std::string& field,
                   std::vector<std::string>* changes) {
  const int64_t seq = t->seq_len() > 0                    ? t->seq_len()
                      : spec.data().train().seq_len() > 0 ? spec.data().train().seq_len()
                                                          : 256;
  const int64_t batch = t->global_batch() > 0 ? t->global_batch() : 16;
  t->set_tokens(Scaled(t->tokens(), factor, batch * seq, field, changes));
}

}  // namespace

std::vector<std::string> ScaleTokenBudgets(v1::JobSpec* spec, double factor) {
  std::vector<std::string> changes;
  factor = std::min(1.0, std::max(0.0, factor));
  for (int i = 0; i < spec->stages_size(); ++i) {
    v1::StageSpec* s = spec->mutable_stages(i);
    const std::string at = absl::StrCat("stages[", i, "].");
    switch (s->kind_case()) {
      case v1::StageSpec::kTeacherCorrection:
        ScaleTraining(s->mutable_teacher_correction(), *spec, factor, at + "teacher_correction.tokens", &changes);
        break;
      case v1::StageSpec::kDistill:
        ScaleTraining(s->mutable_distill(), *spec, factor, at + "distill.tokens", &changes);
        break;
      case v1::StageSpec::kStreamline:
        ScaleTraining(s->mutable_streamline(), *spec, factor, at + "streamline.tokens", &changes);
        break;
      case v1::StageSpec::kPrune:
        if (s->prune().has_search() && !s->prune().search().probe_tokens().empty()) {
          // Probes train with the next distill stage's recipe: one of its steps at least.
          const v1::DistillStage next = ProbeDistill(*spec, i);
          const int64_t seq = next.seq_len() > 0                   ? next.seq_len()
                              : spec->data().train().seq_len() > 0 ? spec->data().train().seq_len()
                                                                   : 256;
          const int64_t batch = next.global_batch() > 0 ? next.global_batch() : 16;
          v1::SearchSpec* search = s->mutable_prune()->mutable_search();
          search->set_probe_tokens(
              Scaled(search->probe_tokens(), factor, batch * seq, at + "prune.search.probe_tokens", &changes));
        }
        break;
      default:
        break;
    }
  }
  return changes;
}

}  // namespace topiary::cli
