// Zero-shot multiple choice (docs/design.md, "The algorithms"), as lm-evaluation-harness
// scores it: each example is {"context": str, "choices": [str, ...],
// "label": int} on one JSONL line; a choice's score is the log-likelihood of
// its tokens following the context; `acc` takes the best score, `acc_norm`
// the best score divided by the choice's length in bytes. The context is
// cut from the left when context + choice exceed max_len tokens.
// Parsing reads untrusted files: every malformed line is an error naming its
// line number. Blocking; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/data/tokenizer.h"
#include "worker/model/llama.h"

namespace topiary::eval {

struct McExample {
  std::string context;
  std::vector<std::string> choices;
  int64_t label = 0;
};

// At most `max_examples` (0: all); refuses files over 1 GB.
absl::StatusOr<std::vector<McExample>> ParseMcTasks(absl::string_view jsonl, int64_t max_examples = 0);

struct McResult {
  int64_t examples = 0;
  double acc = 0;
  double acc_norm = 0;
};

// The log-likelihood of each choice's tokens after the context (one padded
// forward for all choices).
std::vector<double> ChoiceLogLikelihoods(const model::LlamaModel& model, const data::Tokenizer& tokenizer,
                                         const McExample& example, int64_t max_len);

absl::StatusOr<McResult> EvaluateMultipleChoice(const model::LlamaModel& model, const data::Tokenizer& tokenizer,
                                                const std::vector<McExample>& examples, int64_t max_len = 512);

}  // namespace topiary::eval
