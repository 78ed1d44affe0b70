#include "client/compress_commands.h"

#include <cstdio>

#include <CLI/CLI.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/local_util.h"
#include "common/process.h"
#include "common/status_macros.h"
#include "worker/stages/importance_stage.h"
#include "worker/stages/prune_stage.h"
#include "worker/stages/search_stage.h"

namespace topiary::cli {
namespace {

// ---- importance ------------------------------------------------------------

struct ImportanceFlags {
  std::string batch_agg = "l2", seq_agg = "mean", mlp_activation = "down_proj_input";
  std::string depth = "lm_loss,magnitude_l1,reverse_order";
  stages::ImportanceStageOptions stage;
  stages::DistOptions dist;
  int threads = 0;
};

absl::Status RunImportance(ImportanceFlags f) {
  ReexecWithPassiveOpenMp();  // fp32 forward passes
  auto& o = f.stage.importance;
  ASSIGN_OR_RETURN(o.agg.batch, compress::ParseAgg(f.batch_agg));
  ASSIGN_OR_RETURN(o.agg.seq, compress::ParseAgg(f.seq_agg));
  if (f.mlp_activation == "down_proj_input")
    o.mlp = compress::MlpActivation::kDownProjInput;
  else if (f.mlp_activation == "gate_proj_output")
    o.mlp = compress::MlpActivation::kGateOutput;
  else
    return absl::InvalidArgumentError("--mlp-activation: expected down_proj_input or gate_proj_output");
  o.extra_depth.clear();
  for (absl::string_view m : absl::StrSplit(f.depth, ',', absl::SkipEmpty())) o.extra_depth.emplace_back(m);
  ASSIGN_OR_RETURN(stages::DistSession dist, stages::OpenDist(f.dist));
  ASSIGN_OR_RETURN(stages::ImportanceStageResult r, stages::RunImportance(LocalContext(f.threads, &dist), f.stage));
  if (dist.comm->rank() != 0) {
    std::printf("rank %d of %d: done\n", dist.comm->rank(), dist.comm->world_size());
    return absl::OkStatus();
  }
  std::printf("%s: %lld sequences, %lld tokens; depth metrics:", r.scores_path.c_str(),
              static_cast<long long>(r.sequences), static_cast<long long>(r.tokens));
  for (const std::string& name : r.depth_metrics) std::printf(" %s", name.c_str());
  std::printf("\n");
  return absl::OkStatus();
}

// ---- prune -----------------------------------------------------------------

struct PruneFlags {
  std::string target, dtype = "bf16";
  std::string drop_layers, drop_attention, drop_mlp;
  bool no_sync = false;
  stages::PruneStageOptions stage;
};

absl::StatusOr<std::vector<int64_t>> ParseList(const std::string& s, absl::string_view field) {
  std::vector<int64_t> out;
  for (absl::string_view p : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    int64_t v;
    if (!absl::SimpleAtoi(p, &v))
      return absl::InvalidArgumentError(absl::StrCat(field, ": '", p, "' is not an integer"));
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
    if (p.first == "hidden_size")
      t->hidden_size = v;
    else if (p.first == "intermediate_size")
      t->intermediate_size = v;
    else if (p.first == "num_attention_heads")
      t->num_attention_heads = v;
    else if (p.first == "num_key_value_heads")
      t->num_key_value_heads = v;
    else if (p.first == "num_hidden_layers")
      t->num_hidden_layers = v;
    else
      return absl::InvalidArgumentError(absl::StrCat("--target: unknown key '", p.first, "'"));
  }
  return absl::OkStatus();
}

absl::Status RunPrune(PruneFlags f) {
  compress::PruneTarget& t = f.stage.target;
  RETURN_IF_ERROR(ParseTarget(f.target, &t));
  ASSIGN_OR_RETURN(t.drop_layers, ParseList(f.drop_layers, "--drop-layers"));
  ASSIGN_OR_RETURN(t.drop_attention, ParseList(f.drop_attention, "--drop-attention"));
  ASSIGN_OR_RETURN(t.drop_mlp, ParseList(f.drop_mlp, "--drop-mlp"));
  ASSIGN_OR_RETURN(f.stage.dtype, stages::ParseDtype(f.dtype, "--dtype"));
  f.stage.durable = !f.no_sync;
  ASSIGN_OR_RETURN(stages::PruneStageResult r, stages::RunPrune(LocalContext(0), f.stage));
  std::printf("%s: %lld -> %lld parameters (%.1f%%), non-embedding %lld -> %lld%s; peak RSS %.0f MB\n",
              f.stage.out.c_str(), static_cast<long long>(r.before.total()), static_cast<long long>(r.after.total()),
              100.0 * r.after.total() / r.before.total(), static_cast<long long>(r.before.non_embedding()),
              static_cast<long long>(r.after.non_embedding()),
              r.config.IsIsomorphic() ? "" : " (not isomorphic: Topiary format)", r.peak_rss_bytes / 1e6);
  return absl::OkStatus();
}

// ---- search ----------------------------------------------------------------

struct SearchFlags {
  stages::SearchStageOptions stage;
  int threads = 0;
};

absl::Status RunSearch(SearchFlags f) {
  ReexecWithPassiveOpenMp();  // fp32 forward passes
  ASSIGN_OR_RETURN(stages::SearchStageResult r, stages::RunSearch(LocalContext(f.threads), f.stage));
  std::printf("%s", r.table.c_str());
  return absl::OkStatus();
}

}  // namespace

void RegisterCompressCommands(CLI::App& app, CommandRegistry& registry) {
  {
    auto f = std::make_shared<ImportanceFlags>();
    auto& o = f->stage.importance;
    auto* cmd = app.add_subcommand("importance", "estimate width and depth importance on calibration data");
    cmd->add_option("--model", f->stage.model, "Hugging Face model directory")->required();
    AddDataFlags(cmd, &f->stage.data);
    cmd->add_option("--out", f->stage.out, "output directory (scores.json, depth.svg, width.svg)")->required();
    cmd->add_option("--seq-len", o.seq_len, "calibration sequence length")->capture_default_str();
    cmd->add_option("--samples", o.samples, "calibration sequences")->capture_default_str();
    cmd->add_option("--batch", o.batch, "sequences per forward")->capture_default_str();
    cmd->add_option("--seed", o.seed, "calibration sampling seed")->capture_default_str();
    cmd->add_option("--batch-agg", f->batch_agg, "mean|l2|var")->capture_default_str();
    cmd->add_option("--seq-agg", f->seq_agg, "mean|l2|var")->capture_default_str();
    cmd->add_option("--mlp-activation", f->mlp_activation, "down_proj_input|gate_proj_output")->capture_default_str();
    cmd->add_option("--depth", f->depth,
                    "extra depth metrics (comma list): lm_loss, perplexity, taylor, "
                    "magnitude_l1, magnitude_l2, reverse_order, random")
        ->capture_default_str();
    cmd->add_option("--threads", f->threads, "CPU threads (0: all)");
    AddDistFlags(cmd, &f->dist);
    AddRunner(registry, cmd, f, "importance", RunImportance);
  }
  {
    auto f = std::make_shared<PruneFlags>();
    auto* cmd = app.add_subcommand("prune", "prune to a target shape using importance scores");
    cmd->add_option("--model", f->stage.model, "Hugging Face model directory")->required();
    cmd->add_option("--scores", f->stage.scores, "scores.json from `topiary importance`");
    cmd->add_option("--target", f->target,
                    "hidden_size=..,intermediate_size=..,num_attention_heads=..,"
                    "num_key_value_heads=..,num_hidden_layers=.. (any subset)");
    cmd->add_option("--depth-metric", f->stage.target.depth_metric, "ranks layers for num_hidden_layers")
        ->capture_default_str();
    cmd->add_flag("--contiguous", f->stage.target.contiguous, "drop one window of consecutive layers");
    cmd->add_option("--drop-layers", f->drop_layers, "layers to remove (comma list)");
    cmd->add_option("--drop-attention", f->drop_attention, "attention sublayers to remove (not isomorphic)");
    cmd->add_option("--drop-mlp", f->drop_mlp, "MLP sublayers to remove (not isomorphic)");
    cmd->add_option("--divisor", f->stage.target.divisor, "widths must be multiples of this")->capture_default_str();
    cmd->add_flag("--redistribute-heads", f->stage.target.redistribute_heads,
                  "Minitron head residual redistribution into the kept query heads");
    cmd->add_option("--dtype", f->dtype, "output dtype")->capture_default_str();
    cmd->add_option("--out", f->stage.out, "output directory")->required();
    cmd->add_flag("--no-sync", f->no_sync,
                  "do not fsync the output (like cp: faster, but a machine crash may lose it)");
    AddRunner(registry, cmd, f, "prune", RunPrune);
  }
  {
    auto f = std::make_shared<SearchFlags>();
    auto& sp = f->stage.space;
    auto* cmd = app.add_subcommand("search", "rank candidate shapes under a parameter budget by zero-shot loss");
    cmd->add_option("--model", f->stage.model, "Hugging Face model directory")->required();
    cmd->add_option("--scores", f->stage.scores, "scores.json from `topiary importance`")->required();
    AddDataFlags(cmd, &f->stage.data, "--data");
    cmd->add_option("--params", f->stage.params, "parameter budget: a count (6M) or a fraction of the model (0.6)")
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
    cmd->add_option("--seq-len", f->stage.eval.seq_len, "evaluation window")->capture_default_str();
    cmd->add_option("--max-windows", f->stage.eval.max_windows, "windows per candidate (0: all)")
        ->capture_default_str();
    cmd->add_option("--out", f->stage.out, "writes search.txt and search.json here");
    cmd->add_option("--threads", f->threads, "CPU threads (0: all)");
    AddRunner(registry, cmd, f, "search", RunSearch);
  }
}

}  // namespace topiary::cli
