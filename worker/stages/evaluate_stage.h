// The evaluate stage (docs/design.md, "Evaluation"): token-weighted loss and
// perplexity on held-out windows, KL to a teacher and top-1 agreement with
// it, and zero-shot multiple choice (acc, acc_norm as lm-evaluation-harness
// computes them). One rank. Blocking.
#pragma once

#include <ATen/core/ScalarType.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/eval/perplexity.h"
#include "worker/stages/context.h"
#include "worker/stages/data.h"

namespace topiary::stages {

struct EvaluateOptions {
  std::string model;
  std::string teacher;  // empty: no KL or agreement
  DataOptions data;     // empty path: no perplexity
  eval::EvalOptions eval;
  std::vector<std::string> tasks;  // zero-shot multiple choice JSONL files
  int64_t max_examples = 0;        // per file (0: all)
  std::string tokenizer;           // for tasks (default <model>/tokenizer.model)
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> sample_prompt;  // when not empty, the model continues it greedily
  int64_t sample_tokens = 32;
};

struct TaskScore {
  std::string file;
  int64_t examples = 0;
  double acc = 0, acc_norm = 0;
};

struct EvaluateResult {
  std::optional<eval::LossResult> loss;  // with data
  std::optional<double> kl;              // with data and a teacher
  std::optional<double> top1_agreement;
  std::vector<TaskScore> tasks;
  std::vector<int64_t> sample;  // the greedy continuation of sample_prompt (without the prompt)
};

absl::StatusOr<EvaluateResult> RunEvaluate(const StageContext& context, const EvaluateOptions& options);

}  // namespace topiary::stages
