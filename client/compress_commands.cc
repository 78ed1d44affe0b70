#include "client/compress_commands.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/local_util.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "common/process.h"
#include "common/units.h"
#include "worker/compress/importance/estimate.h"
#include "worker/compress/importance/plots.h"
#include "worker/compress/importance/scores_json.h"
#include "worker/compress/prune/plan.h"
#include "worker/compress/search/search.h"
#include "worker/eval/perplexity.h"
#include "worker/model/checkpoint.h"

namespace topiary::cli {
namespace {

// ---- importance ------------------------------------------------------------

struct ImportanceFlags {
  std::string model, out, batch_agg = "l2", seq_agg = "mean", mlp_activation = "down_proj_input";
  std::string depth = "lm_loss,magnitude_l1,reverse_order";
  DataFlags data;
  DistFlags dist;
  compress::ImportanceOptions options;
  int threads = 0;
};

absl::Status RunImportance(ImportanceFlags f) {
  ReexecWithPassiveOpenMp();  // fp32 forward passes
  SetThreads(f.threads);
  auto& o = f.options;
  ASSIGN_OR_RETURN(o.agg.batch, compress::ParseAgg(f.batch_agg));
  ASSIGN_OR_RETURN(o.agg.seq, compress::ParseAgg(f.seq_agg));
  if (f.mlp_activation == "down_proj_input") o.mlp = compress::MlpActivation::kDownProjInput;
  else if (f.mlp_activation == "gate_proj_output") o.mlp = compress::MlpActivation::kGateOutput;
  else return absl::InvalidArgumentError("--mlp-activation: expected down_proj_input or gate_proj_output");
  o.extra_depth.clear();
  for (absl::string_view m : absl::StrSplit(f.depth, ',', absl::SkipEmpty())) o.extra_depth.emplace_back(m);
  ASSIGN_OR_RETURN(model::LlamaModel m, model::LoadCheckpoint(f.model, at::kFloat));
  ASSIGN_OR_RETURN(auto file, OpenData(f.data, f.model, m.config.vocab_size));
  ASSIGN_OR_RETURN(DistSession dist, OpenDist(f.dist));
  ASSIGN_OR_RETURN(compress::ImportanceResult r,
                   compress::EstimateImportance(m, *file, {0, file->size()}, o, dist.comm.get()));
  if (dist.comm->rank() != 0) {  // every rank holds the same scores; rank 0 writes them
    std::printf("rank %d of %d: done\n", dist.comm->rank(), dist.comm->world_size());
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(MakeDirs(f.out));
  compress::ScoresProvenance prov{f.model, f.data.path, o};
  RETURN_IF_ERROR(WriteFileAtomically(f.out + "/scores.json", compress::ScoresToJson(m.config, r, prov)));
  RETURN_IF_ERROR(WriteFileAtomically(f.out + "/depth.svg",
                                      compress::LineChartSvg("Depth importance per layer", r.scores.depth)));
  std::map<std::string, std::vector<double>> width;
  auto means = [](const at::Tensor& t) {
    at::Tensor m = t.to(at::kDouble).mean(-1);
    return std::vector<double>(m.data_ptr<double>(), m.data_ptr<double>() + m.numel());
  };
  width["heads (mean)"] = means(r.scores.heads);
  width["kv groups (mean)"] = means(r.scores.kv_groups);
  width["neurons (mean)"] = means(r.scores.neurons);
  at::Tensor per_norm = r.channels_per_norm.narrow(0, 0, m.config.num_hidden_layers * 2).view(
      {m.config.num_hidden_layers, 2, m.config.hidden_size});
  width["input norm channels (mean)"] = means(per_norm.select(1, 0));
  width["post norm channels (mean)"] = means(per_norm.select(1, 1));
  RETURN_IF_ERROR(WriteFileAtomically(f.out + "/width.svg",
                                      compress::LineChartSvg("Width statistics per layer", width)));
  std::printf("%s/scores.json: %lld sequences, %lld tokens; depth metrics:", f.out.c_str(),
              static_cast<long long>(r.sequences), static_cast<long long>(r.tokens));
  for (const auto& [name, v] : r.scores.depth) std::printf(" %s", name.c_str());
  std::printf("\n");
  return absl::OkStatus();
}

// ---- prune -----------------------------------------------------------------

struct PruneFlags {
  std::string model, scores, target, out, dtype = "bf16";
  std::string drop_layers, drop_attention, drop_mlp;
  bool no_sync = false;
  compress::PruneTarget t;
};

absl::StatusOr<std::vector<int64_t>> ParseList(const std::string& s, absl::string_view field) {
  std::vector<int64_t> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(p, &v)) return absl::InvalidArgumentError(absl::StrCat(field, ": '", p, "' is not an integer"));
    out.push_back(v);
  }
  return out;
}

absl::Status ParseTarget(const std::string& text, compress::PruneTarget* t) {
  for (absl::string_view kv : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    int64_t v;
    if (!absl::SimpleAtoi(p.second, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("--target: '", kv, "' must be key=integer"));
    }
    if (p.first == "hidden_size") t->hidden_size = v;
    else if (p.first == "intermediate_size") t->intermediate_size = v;
    else if (p.first == "num_attention_heads") t->num_attention_heads = v;
    else if (p.first == "num_key_value_heads") t->num_key_value_heads = v;
    else if (p.first == "num_hidden_layers") t->num_hidden_layers = v;
    else return absl::InvalidArgumentError(absl::StrCat("--target: unknown key '", p.first, "'"));
  }
  return absl::OkStatus();
}

absl::Status RunPrune(PruneFlags f) {
  RETURN_IF_ERROR(ParseTarget(f.target, &f.t));
  ASSIGN_OR_RETURN(f.t.drop_layers, ParseList(f.drop_layers, "--drop-layers"));
  ASSIGN_OR_RETURN(f.t.drop_attention, ParseList(f.drop_attention, "--drop-attention"));
  ASSIGN_OR_RETURN(f.t.drop_mlp, ParseList(f.drop_mlp, "--drop-mlp"));
  ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDtype(f.dtype, "--dtype"));
  ASSIGN_OR_RETURN(model::ModelConfig config, model::LoadConfig(f.model));
  RETURN_IF_ERROR(compress::ValidateTarget(config, f.t));  // before any heavy work
  compress::Scores scores;
  if (!f.scores.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(f.scores, size_t{2} << 30));
    ASSIGN_OR_RETURN(scores, compress::ScoresFromJson(text, config));
  }
  ASSIGN_OR_RETURN(compress::PrunePlan plan, compress::MakePlan(config, scores, f.t));
  model::SaveOptions so;
  so.dtype = dtype;
  so.copy_files_from = f.model;
  so.durable = !f.no_sync;
  RETURN_IF_ERROR(compress::PruneCheckpoint(f.model, plan, f.out, so));  // streams tensor by tensor
  auto before = model::CountParams(config), after = model::CountParams(plan.config);
  std::printf("%s: %lld -> %lld parameters (%.1f%%), non-embedding %lld -> %lld%s; peak RSS %.0f MB\n", f.out.c_str(),
              static_cast<long long>(before.total()), static_cast<long long>(after.total()),
              100.0 * after.total() / before.total(), static_cast<long long>(before.non_embedding()),
              static_cast<long long>(after.non_embedding()),
              plan.config.IsIsomorphic() ? "" : " (not isomorphic: Topiary format)", PeakRssBytes() / 1e6);
  return absl::OkStatus();
}

// ---- search ----------------------------------------------------------------

struct SearchFlags {
  std::string model, scores, params, out;
  DataFlags data;
  compress::SearchSpace space;
  eval::EvalOptions eval;
  int threads = 0;
};

// "6M", "6000000" or a fraction of the original ("0.6").
absl::StatusOr<int64_t> ParseBudget(const std::string& text, int64_t total) {
  double fraction = 0;
  if (absl::SimpleAtod(text, &fraction) && fraction > 0 && fraction <= 1 && text.find('.') != std::string::npos) {
    return static_cast<int64_t>(std::llround(fraction * static_cast<double>(total)));
  }
  return ParseCount(text, "--params");
}

absl::Status RunSearch(SearchFlags f) {
  ReexecWithPassiveOpenMp();  // fp32 forward passes
  SetThreads(f.threads);
  ASSIGN_OR_RETURN(model::ModelConfig config, model::LoadConfig(f.model));
  ASSIGN_OR_RETURN(f.space.budget, ParseBudget(f.params, model::CountParams(config).total()));
  ASSIGN_OR_RETURN(std::vector<compress::Candidate> candidates, compress::EnumerateCandidates(config, f.space));
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(f.scores, size_t{2} << 30));
  ASSIGN_OR_RETURN(compress::Scores scores, compress::ScoresFromJson(text, config));
  ASSIGN_OR_RETURN(model::LlamaModel m, model::LoadCheckpoint(f.model, at::kFloat));
  ASSIGN_OR_RETURN(auto file, OpenData(f.data, f.model, config.vocab_size));
  std::fprintf(stderr, "search: %zu candidates within %.0f%% of %s parameters\n", candidates.size(),
               f.space.tolerance * 100, FormatCount(static_cast<double>(f.space.budget)).c_str());
  ASSIGN_OR_RETURN(std::vector<compress::Candidate> ranked,
                   compress::RankCandidates(m, scores, std::move(candidates), *file, f.eval, f.space.depth_metric));
  const std::string table = compress::FormatTable(config, ranked);
  std::printf("%s", table.c_str());
  if (!f.out.empty()) {
    RETURN_IF_ERROR(MakeDirs(f.out));
    RETURN_IF_ERROR(WriteFileAtomically(f.out + "/search.txt", table));
    RETURN_IF_ERROR(WriteFileAtomically(f.out + "/search.json", compress::CandidatesToJson(config, f.space, ranked)));
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterCompressCommands(CLI::App& app, CommandRegistry& registry) {
  {
    auto f = std::make_shared<ImportanceFlags>();
    auto& o = f->options;
    auto* cmd = app.add_subcommand("importance", "estimate width and depth importance on calibration data");
    cmd->add_option("--model", f->model, "Hugging Face model directory")->required();
    AddDataFlags(cmd, &f->data);
    cmd->add_option("--out", f->out, "output directory (scores.json, depth.svg, width.svg)")->required();
    cmd->add_option("--seq-len", o.seq_len, "calibration sequence length")->capture_default_str();
    cmd->add_option("--samples", o.samples, "calibration sequences")->capture_default_str();
    cmd->add_option("--batch", o.batch, "sequences per forward")->capture_default_str();
    cmd->add_option("--seed", o.seed, "calibration sampling seed")->capture_default_str();
    cmd->add_option("--batch-agg", f->batch_agg, "mean|l2|var")->capture_default_str();
    cmd->add_option("--seq-agg", f->seq_agg, "mean|l2|var")->capture_default_str();
    cmd->add_option("--mlp-activation", f->mlp_activation, "down_proj_input|gate_proj_output")->capture_default_str();
    cmd->add_option("--depth", f->depth, "extra depth metrics (comma list): lm_loss, perplexity, taylor, "
                    "magnitude_l1, magnitude_l2, reverse_order, random")->capture_default_str();
    cmd->add_option("--threads", f->threads, "CPU threads (0: all)");
    AddDistFlags(cmd, &f->dist);
    AddRunner(registry, cmd, f, "importance", RunImportance);
  }
  {
    auto f = std::make_shared<PruneFlags>();
    auto* cmd = app.add_subcommand("prune", "prune to a target shape using importance scores");
    cmd->add_option("--model", f->model, "Hugging Face model directory")->required();
    cmd->add_option("--scores", f->scores, "scores.json from `topiary importance`");
    cmd->add_option("--target", f->target, "hidden_size=..,intermediate_size=..,num_attention_heads=..,"
                    "num_key_value_heads=..,num_hidden_layers=.. (any subset)");
    cmd->add_option("--depth-metric", f->t.depth_metric, "ranks layers for num_hidden_layers")->capture_default_str();
    cmd->add_flag("--contiguous", f->t.contiguous, "drop one window of consecutive layers");
    cmd->add_option("--drop-layers", f->drop_layers, "layers to remove (comma list)");
    cmd->add_option("--drop-attention", f->drop_attention, "attention sublayers to remove (not isomorphic)");
    cmd->add_option("--drop-mlp", f->drop_mlp, "MLP sublayers to remove (not isomorphic)");
    cmd->add_option("--divisor", f->t.divisor, "widths must be multiples of this")->capture_default_str();
    cmd->add_flag("--redistribute-heads", f->t.redistribute_heads,
                  "Minitron head residual redistribution into the kept query heads");
    cmd->add_option("--dtype", f->dtype, "output dtype")->capture_default_str();
    cmd->add_option("--out", f->out, "output directory")->required();
    cmd->add_flag("--no-sync", f->no_sync,
                  "do not fsync the output (like cp: faster, but a machine crash may lose it)");
    AddRunner(registry, cmd, f, "prune", RunPrune);
  }
  {
    auto f = std::make_shared<SearchFlags>();
    auto& sp = f->space;
    auto* cmd = app.add_subcommand("search", "rank candidate shapes under a parameter budget by zero-shot loss");
    cmd->add_option("--model", f->model, "Hugging Face model directory")->required();
    cmd->add_option("--scores", f->scores, "scores.json from `topiary importance`")->required();
    AddDataFlags(cmd, &f->data, "--data");
    cmd->add_option("--params", f->params, "parameter budget: a count (6M) or a fraction of the model (0.6)")
        ->required();
    cmd->add_option("--tolerance", sp.tolerance, "keep shapes within this fraction of the budget")
        ->capture_default_str();
    cmd->add_option("--min-depth", sp.min_depth, "fewest layers, as a fraction")->capture_default_str();
    cmd->add_option("--min-width", sp.min_width, "narrowest width per axis, as a fraction")->capture_default_str();
    cmd->add_option("--hidden-divisor", sp.hidden_divisor, "hidden_size grid step")->capture_default_str();
    cmd->add_option("--ffn-divisor", sp.ffn_divisor, "intermediate_size grid step")->capture_default_str();
    cmd->add_option("--max-candidates", sp.max_candidates, "evaluate at most this many (closest to the budget)")
        ->capture_default_str();
    cmd->add_option("--depth-metric", sp.depth_metric, "ranks layers when depth is cut")->capture_default_str();
    cmd->add_option("--seq-len", f->eval.seq_len, "evaluation window")->capture_default_str();
    cmd->add_option("--max-windows", f->eval.max_windows, "windows per candidate (0: all)")->capture_default_str();
    cmd->add_option("--out", f->out, "writes search.txt and search.json here");
    cmd->add_option("--threads", f->threads, "CPU threads (0: all)");
    AddRunner(registry, cmd, f, "search", RunSearch);
  }
}

}  // namespace topiary::cli
