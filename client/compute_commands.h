// The commands `topiary` hands to `topiary-compute`: everything that loads a
// model (and so libtorch), plus `run`; inspect is listed here for its place
// in the help but runs in the front (client/inspect_command.h). The front binary lists them in its
// help with these descriptions and execs topiary-compute with the same
// arguments; topiary-compute registers each under the same name (a test
// compares the two --help listings).
#pragma once

namespace topiary::cli {

struct ComputeCommand {
  const char* name;
  const char* help;
};

// In --help order: the local commands, then (after the API commands) run.
inline constexpr ComputeCommand kLocalComputeCommands[] = {
    {"init", "create a randomly initialised checkpoint from a config.json"},
    {"tokenize", "tokenize a text or JSONL corpus into a token file"},
    {"eval", "token-weighted loss and perplexity on consecutive windows"},
    {"inspect", "config, parameter counts, dtype and size of a checkpoint"},
    {"generate", "continue a prompt with greedy or top-p sampling"},
    {"importance", "estimate width and depth importance on calibration data"},
    {"prune", "prune to a target shape using importance scores"},
    {"search", "rank candidate shapes under a parameter budget by zero-shot loss"},
    {"train", "train a causal LM with cross-entropy (also teacher correction)"},
    {"distill", "recover a pruned student by distillation from its teacher"},
    {"streamline", "remove N contiguous blocks and train one replacement block in their place (LLM-Streamline)"},
};
inline constexpr ComputeCommand kRunCommand = {"run",
                                               "run a job spec on this machine: a coordinator, workers, live progress"};

}  // namespace topiary::cli
