// The report of a job (docs/design.md, "The job report"): what the job did,
// built from the job's record and the files its stages wrote under
// <storage>/jobs/<job>/ (scores.json, train_log.jsonl, result.json files),
// as JSON, Markdown and one self-contained HTML page (inline CSS and SVG:
// nothing outside itself, readable without a server). The coordinator writes
// the three files into the job's directory when the job ends, whatever the
// outcome; GetJobReport returns the JSON. Every file read is bounded in size
// and nesting. Thread-safe.
//
// report.json, version 1:
// {
//   "version": 1,
//   "job": {"id", "name", "owner", "state", "error", "created", "updated", "seconds"},
//   "failed_stage": {"name", "error"} | absent,
//   "teacher": {"path", "config": {...}, "params", "bytes", "dtype"},
//   "result": {"path", "config", "params", "bytes", "dtype"} | absent (no model yet),
//   "stages": [{"name", "kind", "state", "seconds", "attempts", "error"}],
//   "importance": {"stage", "depth": {metric: [per layer]},
//                  "width": {"heads": [per-layer mean], "kv_groups": [...], "neurons": [...]}} | absent,
//   "search": {"stage", "best", "candidates": [{"index", "config", "params", "zero_shot_loss",
//              "distilled_loss", "loss", "winner"}]} | absent,
//   "training": [{"stage", "kind", "step": [...], "loss": [...], "eval_step": [...], "eval_loss": [...],
//                 "tokens", "tokens_per_second"}],
//   "evaluation": {"stage", "models": [{"label", "params", "perplexity", "loss", "kl_to_teacher",
//                  "top1_agreement", "tasks": [{"file", "acc", "acc_norm", "examples"}]}]} | absent,
//   "sample": {"prompt", "teacher", "student"} | absent,
//   "spec": {the job spec as YAML would say it}
// }
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "topiary/v1/job.pb.h"

namespace topiary::report {

inline constexpr int kReportVersion = 1;

// `job_dir` is <storage root>/jobs/<job id>.
nlohmann::json BuildReport(const v1::Job& job, const std::string& job_dir);

std::string RenderMarkdown(const nlohmann::json& report);
std::string RenderHtml(const nlohmann::json& report);
// A few lines for a terminal: outcome, shape, evaluation, where the files are.
std::string RenderSummary(const nlohmann::json& report, const std::string& job_dir);

// Numbers as both renderers print them (tests compare the renderings with the JSON).
std::string FormatLoss(double v);        // %.4f
std::string FormatPerplexity(double v);  // %.2f
std::string FormatParams(double v);      // 4.82M
std::string FormatSeconds(double v);     // 12.3 s

}  // namespace topiary::report
