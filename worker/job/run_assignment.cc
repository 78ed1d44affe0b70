#include "worker/job/run_assignment.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/spec/spec_io.h"
#include "common/spec/stages.h"
#include "common/status_macros.h"
#include "common/storage_path.h"
#include "common/units.h"
#include "worker/data/sampler.h"
#include "worker/data/tokenizer.h"
#include "worker/job/layout.h"
#include "worker/job/memory.h"
#include "worker/job/model_card.h"
#include "worker/job/spec_options.h"
#include "worker/model/checkpoint.h"
#include "worker/stages/evaluate_stage.h"
#include "worker/stages/export_stage.h"
#include "worker/stages/importance_stage.h"
#include "worker/stages/prune_stage.h"
#include "worker/stages/search_stage.h"
#include "worker/stages/train_stage.h"
#include "worker/train/train_checkpoint.h"

namespace topiary::job {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

json ConfigJson(const model::ModelConfig& c) {
  const model::ParamCounts p = model::CountParams(c);
  return {{"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_attention_heads", c.num_attention_heads},
          {"num_key_value_heads", c.num_key_value_heads},
          {"head_dim", c.head_dim},
          {"num_hidden_layers", c.num_hidden_layers},
          {"vocab_size", c.vocab_size},
          {"isomorphic", c.IsIsomorphic()},
          {"params", p.total()},
          {"non_embedding_params", p.non_embedding()}};
}

void FsyncDir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
}

class Runner {
 public:
  Runner(const v1::Assignment& a, const RankEnv& env, const stages::StageContext& ctx, JobLayout layout,
         Lineage lineage)
      : a_(a),
        env_(env),
        ctx_(ctx),
        layout_(std::move(layout)),
        lineage_(std::move(lineage)),
        stage_(a.spec().stages(a.stage_index())) {}

  absl::StatusOr<json> Run() {
    RETURN_IF_ERROR(Check(layout_.job_dir, "storage_dir"));
    if (std::optional<json> done = Existing(layout_.output); done.has_value() && !IsSearch()) {
      return ctx_.leader() ? *done : json::object();  // a previous attempt finished it
    }
    switch (stage_.kind_case()) {
      case v1::StageSpec::kImportance:
        return Importance();
      case v1::StageSpec::kPrune:
        return IsSearch() ? Probe() : Prune();
      case v1::StageSpec::kTeacherCorrection:
        return Training(stages::TrainMode::kTrain);
      case v1::StageSpec::kDistill:
        return Training(stages::TrainMode::kDistill);
      case v1::StageSpec::kStreamline:
        return Training(stages::TrainMode::kStreamline);
      case v1::StageSpec::kEvaluate:
        return Evaluate();
      case v1::StageSpec::kExport:
        return Export();
      case v1::StageSpec::KIND_NOT_SET:
        break;
    }
    return absl::InvalidArgumentError("assignment: the stage has no kind");
  }

 private:
  bool IsSearch() const { return stage_.kind_case() == v1::StageSpec::kPrune && stage_.prune().has_search(); }

  // Every path a rank opens must resolve under a storage root (symlinks followed, dangling ones too).
  absl::Status Check(const std::string& path, const std::string& field) const {
    absl::Status st = CheckStoragePath(path, env_.storage_roots, field);
    if (!st.ok()) return absl::PermissionDeniedError(st.message());
    return absl::OkStatus();
  }

  absl::StatusOr<stages::DataOptions> Data(const v1::DataSource& d, const std::string& field) const {
    RETURN_IF_ERROR(Check(d.path(), field + ".path"));
    if (!d.tokenizer().empty()) RETURN_IF_ERROR(Check(d.tokenizer(), field + ".tokenizer"));
    stages::DataOptions o = DataOf(d);
    if (o.tokenizer.empty()) o.tokenizer = lineage_.original + "/tokenizer.model";
    return o;
  }

  absl::StatusOr<model::ModelConfig> Config(const std::string& dir, const std::string& field) const {
    RETURN_IF_ERROR(Check(dir, field));
    return model::LoadConfig(dir);
  }

  static std::optional<json> Existing(const std::string& dir) {
    absl::StatusOr<std::string> text = ReadFileToString(dir + "/result.json", 1 << 20);
    if (!text.ok()) return std::nullopt;
    json j = json::parse(*text, nullptr, false);
    if (j.is_discarded()) return std::nullopt;
    return j;
  }

  // A fresh temporary directory for this attempt's output (rank 0).
  absl::StatusOr<std::string> FreshTmp(const std::string& name) const {
    const std::string tmp = absl::StrCat(layout_.work, "/", name, "-attempt-", a_.attempt());
    RETURN_IF_ERROR(RemoveAll(tmp));
    RETURN_IF_ERROR(MakeDirs(tmp));
    return tmp;
  }

  // result.json into tmp, then tmp renamed to dest whole.
  absl::Status Publish(const std::string& tmp, const std::string& dest, const json& result) const {
    ctx_.Phase("publishing");
    RETURN_IF_ERROR(WriteFileAtomically(tmp + "/result.json", result.dump(2)));
    RETURN_IF_ERROR(MakeDirs(fs::path(dest).parent_path().string()));
    std::error_code ec;
    if (fs::exists(dest, ec)) RETURN_IF_ERROR(RemoveAll(dest));
    fs::rename(tmp, dest, ec);
    if (ec) return absl::InternalError(absl::StrCat("rename ", tmp, " to ", dest, ": ", ec.message()));
    FsyncDir(fs::path(dest).parent_path().string());
    return absl::OkStatus();
  }

  absl::Status Fits(const std::string& what, const MemoryEstimate& need) const {
    return CheckFits(what, need, env_.memory_budget);
  }

  absl::StatusOr<json> Importance() {
    const v1::DataSource& cal = a_.spec().data().calibration();
    stages::ImportanceStageOptions o;
    o.model = lineage_.teacher;
    ASSIGN_OR_RETURN(model::ModelConfig config, Config(o.model, "teacher"));
    ASSIGN_OR_RETURN(o.data, Data(cal, "spec.data.calibration"));
    o.importance = ImportanceOf(stage_.importance(), cal);
    RETURN_IF_ERROR(
        Fits("importance", ForwardMemory(config, nullptr, "fp32", o.importance.batch, o.importance.seq_len)));
    std::string tmp;
    if (ctx_.leader()) {
      ASSIGN_OR_RETURN(tmp, FreshTmp("out"));
      o.out = tmp;
    }
    ASSIGN_OR_RETURN(stages::ImportanceStageResult r, stages::RunImportance(ctx_, o));
    if (!ctx_.leader()) return json::object();
    json result = {{"sequences", r.sequences},
                   {"tokens", r.tokens},
                   {"depth_metrics", r.depth_metrics},
                   {"ranks", ctx_.world_size},
                   {"scores", layout_.output + "/scores.json"}};
    RETURN_IF_ERROR(Publish(tmp, layout_.output, result));
    return result;
  }

  absl::StatusOr<json> Prune() {
    stages::PruneStageOptions o;
    o.model = lineage_.teacher;
    ASSIGN_OR_RETURN(model::ModelConfig config, Config(o.model, "teacher"));
    if (!lineage_.scores.empty()) RETURN_IF_ERROR(Check(lineage_.scores, "scores"));
    o.scores = lineage_.scores;
    o.target = TargetOf(stage_.prune().target(), stage_.prune().head_redistribution());
    o.dtype = DtypeOf(stage_.prune().dtype(), DtypeOfConfig(config.torch_dtype));
    ASSIGN_OR_RETURN(std::string tmp, FreshTmp("out"));
    o.out = tmp + "/model";
    ASSIGN_OR_RETURN(stages::PruneStageResult r, stages::RunPrune(ctx_, o));
    json result = {{"config", ConfigJson(r.config)},     {"params_before", r.before.total()},
                   {"params", r.after.total()},          {"dtype", DtypeName(o.dtype)},
                   {"model", layout_.output + "/model"}, {"peak_rss_bytes", r.peak_rss_bytes}};
    RETURN_IF_ERROR(Publish(tmp, layout_.output, result));
    return result;
  }

  // The recipe a search probe distils with: the next distill stage's, else the defaults.
  absl::StatusOr<Recipe> ProbeRecipe() const {
    for (int i = a_.stage_index() + 1; i < a_.spec().stages_size(); ++i) {
      if (a_.spec().stages(i).has_distill()) return RecipeOf(a_.spec().stages(i).distill(), a_.spec(), 1);
    }
    v1::DistillStage defaults;
    defaults.set_tokens("1");
    return RecipeOf(defaults, a_.spec(), 1);
  }

  absl::StatusOr<json> Probe() {
    const v1::SearchSpec& s = stage_.prune().search();
    const std::string dest = absl::StrCat(layout_.output, "/probe-", a_.task_index());
    if (std::optional<json> done = Existing(dest); done.has_value()) return *done;
    stages::SearchProbeOptions o;
    o.search.model = lineage_.teacher;
    ASSIGN_OR_RETURN(model::ModelConfig config, Config(o.search.model, "teacher"));
    RETURN_IF_ERROR(Check(lineage_.scores, "scores"));
    o.search.scores = lineage_.scores;
    o.search.params = s.params();
    o.search.space = SearchSpaceOf(s, spec::TaskCount(stage_));
    ASSIGN_OR_RETURN(o.search.data, Data(a_.spec().data().eval(), "spec.data.eval"));
    o.search.eval = EvalOf(a_.spec().data().eval(), s.eval_windows() > 0 ? s.eval_windows() : 16);
    o.index = a_.task_index();
    if (!s.probe_tokens().empty()) {
      ASSIGN_OR_RETURN(o.probe_tokens, ParseCount(s.probe_tokens(), "search.probe_tokens"));
      ASSIGN_OR_RETURN(o.train_data, Data(a_.spec().data().train(), "spec.data.train"));
      ASSIGN_OR_RETURN(Recipe rc, ProbeRecipe());
      o.recipe = rc.recipe;
      o.train_dtype = rc.dtype;
    }
    o.save_dtype = DtypeOf(stage_.prune().dtype(), DtypeOfConfig(config.torch_dtype));
    MemoryEstimate need = TrainingMemory(config, &config, "bf16", 1, o.recipe.micro_batch, o.recipe.seq_len, false);
    need.teacher += model::CountParams(config).total() * 4;  // the fp32 copy the zero-shot score uses
    RETURN_IF_ERROR(Fits("search probe", need));
    ASSIGN_OR_RETURN(std::string tmp, FreshTmp(absl::StrCat("probe-", a_.task_index())));
    o.out = tmp;
    ASSIGN_OR_RETURN(stages::SearchProbeResult r, stages::RunSearchProbe(ctx_, o));
    json result = {{"index", o.index}, {"candidates", r.candidates}};
    if (r.skipped) {
      result["skipped"] = true;  // no loss: the fan-in passes over it
    } else {
      result["config"] = ConfigJson(r.candidate.config);
      result["params"] = r.candidate.params;
      result["zero_shot_loss"] = r.zero_shot_loss;
      if (r.distilled_loss.has_value()) result["distilled_loss"] = *r.distilled_loss;
      result["probe_tokens"] = o.probe_tokens;
      result["probe_steps"] = r.probe_steps;
      result["loss"] = r.loss();
      result["model"] = dest + "/model";
    }
    RETURN_IF_ERROR(Publish(tmp, dest, result));
    return result;
  }

  // Drops log lines after the newest checkpoint, so that a resumed run's log has each step once.
  absl::Status TrimLog(const std::string& log, const std::string& checkpoints) const {
    ASSIGN_OR_RETURN(std::optional<std::string> latest, train::LatestTrainCheckpoint(checkpoints));
    int64_t keep = 0;
    if (latest.has_value()) {
      const std::string name = fs::path(*latest).filename().string();
      keep = std::stoll(name.substr(name.find('-') + 1));
    }
    absl::StatusOr<std::string> text = ReadFileToString(log, size_t{1} << 30);
    if (!text.ok()) return absl::OkStatus();
    std::istringstream in(*text);
    std::string line, out;
    while (std::getline(in, line)) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.contains("step") && j["step"].is_number() && j["step"].get<int64_t>() <= keep) {
        out += line + "\n";
      }
    }
    return WriteFileAtomically(log, out);
  }

  absl::StatusOr<json> Training(stages::TrainMode mode) {
    stages::TrainStageOptions o;
    o.mode = mode;
    absl::StatusOr<Recipe> rc;
    switch (stage_.kind_case()) {
      case v1::StageSpec::kTeacherCorrection:
        rc = RecipeOf(stage_.teacher_correction(), a_.spec(), ctx_.world_size);
        o.model = lineage_.teacher;
        break;
      case v1::StageSpec::kDistill:
        rc = RecipeOf(stage_.distill(), a_.spec(), ctx_.world_size);
        o.model = lineage_.student;
        o.teacher = lineage_.teacher;
        LossOf(stage_.distill().loss(), &o);
        break;
      default:
        rc = RecipeOf(stage_.streamline(), a_.spec(), ctx_.world_size);
        o.model = lineage_.Current();
        o.drop = stage_.streamline().drop();
        o.first = stage_.streamline().has_first() ? stage_.streamline().first() : -1;
        break;
    }
    if (!rc.ok()) return rc.status();
    ASSIGN_OR_RETURN(model::ModelConfig config, Config(o.model, "model"));
    std::optional<model::ModelConfig> teacher_config;
    if (!o.teacher.empty()) {
      ASSIGN_OR_RETURN(teacher_config, Config(o.teacher, "teacher"));
    }
    ASSIGN_OR_RETURN(o.data, Data(a_.spec().data().train(), "spec.data.train"));
    if (!a_.spec().data().eval().path().empty()) {
      ASSIGN_OR_RETURN(o.eval_data, Data(a_.spec().data().eval(), "spec.data.eval"));
    }
    o.recipe = rc->recipe;
    o.tokens = rc->tokens;
    o.dtype = rc->dtype;
    o.save_dtype = DtypeOfConfig(config.torch_dtype);
    o.use_lora = rc->use_lora;
    o.lora = rc->lora;
    o.train_last_blocks = rc->train_last_blocks;
    o.checkpoint_dir = layout_.work + "/checkpoints";
    o.checkpoint_every = rc->checkpoint_every;
    o.resume = true;  // from the newest checkpoint of an earlier attempt, if any
    o.log_path = layout_.work + "/train_log.jsonl";
    RETURN_IF_ERROR(Fits(stage_.kind_case() == v1::StageSpec::kDistill ? "distillation" : "training",
                         TrainingMemory(config, teacher_config ? &*teacher_config : nullptr, DtypeName(o.dtype),
                                        ctx_.world_size, o.recipe.micro_batch, o.recipe.seq_len, o.use_lora)));
    const std::string tmp = absl::StrCat(layout_.work, "/out-attempt-", a_.attempt());
    o.out = tmp + "/model";
    if (ctx_.leader()) {
      RETURN_IF_ERROR(RemoveAll(tmp));
      RETURN_IF_ERROR(MakeDirs(layout_.work));
      RETURN_IF_ERROR(TrimLog(o.log_path, o.checkpoint_dir));
    }
    ASSIGN_OR_RETURN(stages::TrainStageResult r, stages::RunTraining(ctx_, o));
    if (!ctx_.leader()) return json::object();
    json result = {{"steps", r.steps},
                   {"resumed_from", r.resumed_from},
                   {"tokens", r.tokens},
                   {"loss", r.loss},
                   {"seconds", r.seconds},
                   {"tokens_per_second", r.tokens_per_second},
                   {"ranks", ctx_.world_size},
                   {"config", ConfigJson(r.config)},
                   {"model", layout_.output + "/model"},
                   {"train_log", layout_.output + "/train_log.jsonl"}};
    if (r.eval_loss >= 0) result["eval_loss"] = r.eval_loss;
    if (r.mfu >= 0) result["mfu"] = r.mfu;
    if (r.first_replaced >= 0) result["first_replaced"] = r.first_replaced;
    if (r.lora_parameters > 0) result["lora_parameters"] = r.lora_parameters;
    ASSIGN_OR_RETURN(std::string log, ReadFileToString(o.log_path, size_t{1} << 30));
    RETURN_IF_ERROR(WriteFileAtomically(tmp + "/train_log.jsonl", log));
    RETURN_IF_ERROR(Publish(tmp, layout_.output, result));
    RETURN_IF_ERROR(RemoveAll(o.checkpoint_dir));  // the final model is in place; the optimizer state is not needed
    return result;
  }

  // The first tokens of the held-out data, as the prompt of the report's text sample.
  std::vector<int64_t> SamplePrompt(const stages::DataOptions& data, const model::ModelConfig& config) const {
    auto file = stages::OpenData(data, lineage_.original, config.vocab_size);
    if (!file.ok() || (*file)->size() < 16) return {};
    absl::StatusOr<data::Batch> b = data::ReadSequences(**file, {0}, 16);
    if (!b.ok()) return {};
    at::Tensor ids = b->inputs.reshape({-1}).to(at::kLong).contiguous();
    return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
  }

  absl::StatusOr<json> Evaluate() {
    const v1::EvaluateStage& s = stage_.evaluate();
    stages::DataOptions data;
    if (!a_.spec().data().eval().path().empty()) {
      ASSIGN_OR_RETURN(data, Data(a_.spec().data().eval(), "spec.data.eval"));
    }
    for (int i = 0; i < s.tasks_size(); ++i)
      RETURN_IF_ERROR(Check(s.tasks(i), absl::StrCat("evaluate.tasks[", i, "]")));
    ASSIGN_OR_RETURN(model::ModelConfig teacher_config, Config(lineage_.teacher, "teacher"));
    std::vector<int64_t> prompt = data.path.empty() ? std::vector<int64_t>() : SamplePrompt(data, teacher_config);
    absl::StatusOr<std::unique_ptr<data::Tokenizer>> tok =
        data::Tokenizer::Load(lineage_.original + "/tokenizer.model");
    json models = json::array();
    json sample;
    if (!prompt.empty() && tok.ok()) sample["prompt"] = (*tok)->Decode(prompt);
    for (const auto& [label, path] : lineage_.models) {
      ASSIGN_OR_RETURN(model::ModelConfig config, Config(path, label));
      const bool reference = path == lineage_.teacher;
      stages::EvaluateOptions o;
      o.model = path;
      if (!reference && !data.path.empty()) o.teacher = lineage_.teacher;
      o.data = data;
      o.eval = EvalOf(a_.spec().data().eval(), s.max_windows());
      o.tasks.assign(s.tasks().begin(), s.tasks().end());
      o.max_examples = s.max_examples();
      o.tokenizer = lineage_.original + "/tokenizer.model";
      const bool sampled = reference || &path == &lineage_.models.back().second;
      if (sampled && tok.ok()) o.sample_prompt = prompt;
      RETURN_IF_ERROR(Fits(absl::StrCat("evaluation of the ", label, " model"),
                           ForwardMemory(config, o.teacher.empty() ? nullptr : &teacher_config, "fp32",
                                         o.eval.batch_size, o.eval.seq_len)));
      ASSIGN_OR_RETURN(stages::EvaluateResult r, stages::RunEvaluate(ctx_, o));
      json m = {{"label", label},
                {"path", path},
                {"params", model::CountParams(config).total()},
                {"config", ConfigJson(config)}};
      if (r.loss.has_value()) {
        m["loss"] = r.loss->loss, m["perplexity"] = r.loss->perplexity, m["tokens"] = r.loss->tokens;
        m["kl_to_teacher"] = r.kl.value_or(0.0);
        m["top1_agreement"] = r.top1_agreement.value_or(1.0);
      }
      json tasks = json::array();
      for (const stages::TaskScore& t : r.tasks) {
        tasks.push_back({{"file", t.file}, {"examples", t.examples}, {"acc", t.acc}, {"acc_norm", t.acc_norm}});
      }
      if (!tasks.empty()) m["tasks"] = tasks;
      if (!r.sample.empty() && tok.ok()) sample[reference ? "teacher" : "student"] = (*tok)->Decode(r.sample);
      models.push_back(m);
    }
    json result = {{"models", models}, {"final", models.back()}};
    if (!sample.empty()) result["sample"] = sample;
    if (models.back().contains("loss")) result["loss"] = models.back()["loss"];
    ASSIGN_OR_RETURN(std::string tmp, FreshTmp("out"));
    RETURN_IF_ERROR(WriteFileAtomically(tmp + "/eval.json", result.dump(2)));
    RETURN_IF_ERROR(Publish(tmp, layout_.output, result));
    return result;
  }

  absl::StatusOr<json> Export() {
    const v1::ExportStage& s = stage_.export_();
    stages::ExportOptions o;
    o.model = lineage_.Current();
    ASSIGN_OR_RETURN(model::ModelConfig config, Config(o.model, "model"));
    o.dtype = DtypeOf(s.dtype(), at::kBFloat16);
    o.allow_topiary_format = s.topiary_format();
    ASSIGN_OR_RETURN(std::string tmp, FreshTmp("out"));
    std::string dest = s.path().empty() ? layout_.output + "/model" : s.path();
    if (!s.path().empty()) {
      RETURN_IF_ERROR(Check(s.path(), "export.path"));
      o.out = s.path();
      // A directory a previous attempt of this job exported may be replaced; anything else may not.
      absl::StatusOr<std::string> card = ReadFileToString(s.path() + "/README.md", 1 << 20);
      o.replace = card.ok() && absl::StrContains(*card, absl::StrCat("Topiary job ", a_.job_id()));
    } else {
      o.out = tmp + "/model";
    }
    o.model_card = ModelCard(a_, lineage_, config, DtypeName(o.dtype));
    ASSIGN_OR_RETURN(stages::ExportResult r, stages::RunExport(ctx_, o));
    json result = {{"output_path", dest}, {"config", ConfigJson(r.config)}, {"params", r.params.total()},
                   {"bytes", r.bytes},    {"dtype", DtypeName(o.dtype)},    {"source", o.model}};
    RETURN_IF_ERROR(WriteFileAtomically(tmp + "/README.md", o.model_card));
    RETURN_IF_ERROR(Publish(tmp, layout_.output, result));
    return result;
  }

  const v1::Assignment& a_;
  const RankEnv& env_;
  const stages::StageContext& ctx_;
  const JobLayout layout_;
  const Lineage lineage_;
  const v1::StageSpec& stage_;
};

}  // namespace

absl::StatusOr<json> RunAssignment(const v1::Assignment& a, const RankEnv& env, const stages::StageContext& ctx) {
  if (env.device != "cpu") {
    return absl::FailedPreconditionError(
        absl::StrCat("device '", env.device, "': this build runs stages on the CPU only (no CUDA libtorch)"));
  }
  ASSIGN_OR_RETURN(JobLayout layout, LayoutOf(a));
  ASSIGN_OR_RETURN(Lineage lineage, LineageOf(a, layout));
  Runner runner(a, env, ctx, std::move(layout), std::move(lineage));
  return runner.Run();
}

}  // namespace topiary::job
