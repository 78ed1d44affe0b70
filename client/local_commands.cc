#include "client/local_commands.h"

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli_util.h"
#include "client/inspect_command.h"
#include "client/local_util.h"
#include "common/file_util.h"
#include "common/process.h"
#include "common/status_macros.h"
#include "worker/data/token_file.h"
#include "worker/data/tokenizer.h"
#include "worker/model/checkpoint.h"
#include "worker/model/errors.h"
#include "worker/model/sampling.h"
#include "worker/stages/evaluate_stage.h"

namespace topiary::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- init ------------------------------------------------------------------

struct InitFlags {
  std::string config, out, dtype = "bf16", copy_from;
  uint64_t seed = 0;
};

absl::Status RunInit(const InitFlags& f) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(f.config));
  ASSIGN_OR_RETURN(model::ModelConfig config, model::ParseConfigJson(text));
  ASSIGN_OR_RETURN(at::ScalarType dtype, stages::ParseDtype(f.dtype, "--dtype"));
  model::LlamaModel m = model::InitModel(config, f.seed, at::kFloat);
  model::SaveOptions so;
  so.dtype = dtype;
  so.copy_files_from = f.copy_from;
  RETURN_IF_ERROR(model::SaveCheckpoint(m, f.out, so));
  auto counts = model::CountParams(config);
  std::printf("initialised %s with %lld parameters (seed %llu)\n", f.out.c_str(),
              static_cast<long long>(counts.total()), static_cast<unsigned long long>(f.seed));
  return absl::OkStatus();
}

// ---- tokenize --------------------------------------------------------------

struct TokenizeFlags {
  stages::DataOptions data;
  std::string out;
};

absl::Status RunTokenize(const TokenizeFlags& f) {
  if (f.data.tokenizer.empty()) return absl::InvalidArgumentError("--tokenizer is required");
  ASSIGN_OR_RETURN(auto tok, data::Tokenizer::Load(f.data.tokenizer));
  ASSIGN_OR_RETURN(data::TextFormat tf, data::ParseTextFormat(f.data.format == "auto" ? "text" : f.data.format));
  ASSIGN_OR_RETURN(std::string corpus, ReadFileToString(f.data.path, size_t{8} << 30));
  ASSIGN_OR_RETURN(auto docs, data::SplitDocuments(corpus, tf));
  std::vector<int64_t> ids = data::TokenizeDocuments(*tok, docs);
  data::TokenFormat width = data::FormatForVocab(tok->vocab_size());
  RETURN_IF_ERROR(data::WriteTokenFile(f.out, ids, width));
  std::printf("%s: %zu documents, %zu tokens (%s)\n", f.out.c_str(), docs.size(), ids.size(),
              width == data::TokenFormat::kU16 ? "u16" : "u32");
  return absl::OkStatus();
}

// ---- eval ------------------------------------------------------------------

struct EvalFlags {
  std::string dtype = "fp32", tasks;
  stages::EvaluateOptions stage;
  bool json = false;
  int threads = 0;
};

absl::Status RunEval(EvalFlags f) {
  if (f.dtype == "fp32" || f.dtype == "float32") ReexecWithPassiveOpenMp();
  stages::EvaluateOptions& o = f.stage;
  ASSIGN_OR_RETURN(o.dtype, stages::ParseDtype(f.dtype, "--dtype"));
  if (!f.tasks.empty()) o.tasks = {f.tasks};
  o.tokenizer = o.data.tokenizer;
  ASSIGN_OR_RETURN(stages::EvaluateResult r, stages::RunEvaluate(LocalContext(f.threads), o));
  json j = {{"model", o.model}};
  std::string text;
  if (r.loss.has_value()) {
    if (r.kl.has_value()) {
      j["teacher"] = o.teacher;
      j["kl_to_teacher"] = *r.kl;
      j["top1_agreement"] = *r.top1_agreement;
      text += absl::StrFormat("  KL to teacher %.4f  top-1 agreement %.2f%%", *r.kl, 100 * *r.top1_agreement);
    }
    j["loss"] = r.loss->loss;
    j["perplexity"] = r.loss->perplexity;
    j["tokens"] = r.loss->tokens;
    j["windows"] = r.loss->windows;
    j["seq_len"] = o.eval.seq_len;
    j["data"] = o.data.path;
    text = absl::StrFormat("loss %.4f  perplexity %.3f  over %lld tokens in %lld windows of %lld", r.loss->loss,
                           r.loss->perplexity, static_cast<long long>(r.loss->tokens),
                           static_cast<long long>(r.loss->windows), static_cast<long long>(o.eval.seq_len)) +
           text;
  }
  for (const stages::TaskScore& t : r.tasks) {
    j["tasks"] = {{"file", t.file}, {"examples", t.examples}, {"acc", t.acc}, {"acc_norm", t.acc_norm}};
    text += absl::StrFormat("%s%s: acc %.4f  acc_norm %.4f over %lld examples", text.empty() ? "" : "\n", t.file, t.acc,
                            t.acc_norm, static_cast<long long>(t.examples));
  }
  std::printf("%s\n", f.json ? j.dump().c_str() : text.c_str());
  return absl::OkStatus();
}

// ---- inspect ---------------------------------------------------------------

// ---- generate --------------------------------------------------------------

struct GenerateFlags {
  std::string model, prompt, tokenizer, dtype = "fp32";
  model::SampleOptions sample;
  bool stop_at_eos = false;
  int threads = 0;
};

absl::Status RunGenerate(GenerateFlags f) {
  stages::SetThreads(f.threads);
  ASSIGN_OR_RETURN(at::ScalarType dtype, stages::ParseDtype(f.dtype, "--dtype"));
  ASSIGN_OR_RETURN(model::LlamaModel m, model::OpenCheckpoint(f.model, dtype));
  ASSIGN_OR_RETURN(auto tok, data::Tokenizer::Load(f.tokenizer.empty() ? f.model + "/tokenizer.model" : f.tokenizer));
  if (tok->vocab_size() > m.config.vocab_size) {
    return absl::InvalidArgumentError("--tokenizer: its vocabulary is larger than the model's");
  }
  std::vector<int64_t> ids = tok->Encode(f.prompt);
  if (ids.empty()) return absl::InvalidArgumentError("--prompt: empty after tokenization");
  if (f.stop_at_eos) f.sample.stop_token = tok->eos_id();
  std::vector<int64_t> out = model::Generate(m, ids, f.sample);
  if (!out.empty() && out.back() == tok->eos_id()) out.pop_back();
  std::vector<int64_t> all = ids;
  all.insert(all.end(), out.begin(), out.end());
  std::printf("%s\n", tok->Decode(all).c_str());
  return absl::OkStatus();
}

}  // namespace

void RegisterLocalCommands(CLI::App& app, CommandRegistry& registry) {
  {
    auto f = std::make_shared<InitFlags>();
    auto* cmd = app.add_subcommand("init", "create a randomly initialised checkpoint from a config.json");
    cmd->add_option("--config", f->config, "config.json to instantiate")->required();
    cmd->add_option("--out", f->out, "output directory")->required();
    cmd->add_option("--seed", f->seed, "initialisation seed")->capture_default_str();
    cmd->add_option("--dtype", f->dtype, "saved dtype: fp32|bf16|fp16")->capture_default_str();
    cmd->add_option("--copy-tokenizer-from", f->copy_from, "directory whose tokenizer files are copied");
    AddRunner(registry, cmd, f, "init", RunInit);
  }
  {
    auto f = std::make_shared<TokenizeFlags>();
    auto* cmd = app.add_subcommand("tokenize", "tokenize a text or JSONL corpus into a token file");
    AddDataFlags(cmd, &f->data);
    cmd->add_option("--out", f->out, "output token file (.bin)")->required();
    AddRunner(registry, cmd, f, "tokenize", RunTokenize);
  }
  {
    auto f = std::make_shared<EvalFlags>();
    auto* cmd = app.add_subcommand("eval", "token-weighted loss and perplexity on consecutive windows");
    auto& o = f->stage;
    cmd->add_option("--model", o.model, "Hugging Face model directory")->required();
    AddDataFlags(cmd, &o.data, "--data", /*required=*/false);
    cmd->add_option("--teacher", o.teacher, "also report KL to this teacher and top-1 agreement (needs --data)");
    cmd->add_option("--tasks", f->tasks, "zero-shot multiple choice JSONL: {context, choices, label} per line");
    cmd->add_option("--max-examples", o.max_examples, "score at most N task examples (0: all)")->capture_default_str();
    cmd->add_option("--seq-len", o.eval.seq_len, "window length T (and the longest task input)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    cmd->add_option("--max-windows", o.eval.max_windows, "score at most N windows (0: all)")->capture_default_str();
    cmd->add_option("--batch", o.eval.batch_size, "windows per forward")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    cmd->add_option("--dtype", f->dtype, "compute dtype fp32|bf16")->capture_default_str();
    cmd->add_option("--threads", f->threads, "CPU threads (0: all)");
    cmd->add_flag("--json", f->json, "print one JSON object");
    AddRunner(registry, cmd, f, "eval", RunEval);
  }
  RegisterInspectCommand(app, registry);  // torch-free: the front runs it too
  {
    auto f = std::make_shared<GenerateFlags>();
    auto& s = f->sample;
    auto* cmd = app.add_subcommand("generate", "continue a prompt with greedy or top-p sampling");
    cmd->add_option("--model", f->model, "Hugging Face model directory")->required();
    cmd->add_option("--prompt", f->prompt, "text to continue")->required();
    cmd->add_option("--tokenizer", f->tokenizer, "SentencePiece model (default: the model's)");
    cmd->add_option("--max-new-tokens", s.max_new_tokens)->capture_default_str();
    cmd->add_flag("--greedy", s.greedy, "always take the most likely token");
    cmd->add_option("--temperature", s.temperature)->capture_default_str();
    cmd->add_option("--top-p", s.top_p)->capture_default_str();
    cmd->add_option("--seed", s.seed)->capture_default_str();
    cmd->add_flag("--stop-at-eos", f->stop_at_eos, "stop at the end-of-text token");
    cmd->add_option("--dtype", f->dtype, "compute dtype fp32|bf16")->capture_default_str();
    cmd->add_option("--threads", f->threads, "CPU threads (0: all)");
    AddRunner(registry, cmd, f, "generate", RunGenerate);
  }
}

}  // namespace topiary::cli
