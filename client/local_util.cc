#include "client/local_util.h"

#include <cstdio>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"

namespace topiary::cli {

void AddDistFlags(CLI::App* cmd, stages::DistOptions* f) {
  cmd->add_option("--rank", f->rank, "this process's rank")->capture_default_str();
  cmd->add_option("--world-size", f->world_size, "number of ranks")->capture_default_str();
  cmd->add_option("--rendezvous", f->rendezvous_spec, "file:DIR, a fresh directory every rank sees");
  cmd->add_option("--hostname", f->hostname, "address this rank listens on")->capture_default_str();
  cmd->add_option("--dist-timeout", f->timeout_s, "seconds before a silent peer fails the run")->capture_default_str();
}

void AddDataFlags(CLI::App* cmd, stages::DataOptions* f, const char* flag, bool required) {
  auto* opt = cmd->add_option(flag, f->path, "token file (.bin), text or JSONL corpus");
  if (required) opt->required();
  cmd->add_option(absl::StrCat(flag, "-format"), f->format, "u16|u32|auto|text|jsonl")->capture_default_str();
  cmd->add_option("--tokenizer", f->tokenizer, "SentencePiece model for text/jsonl (default: the model's)");
}

stages::StageContext LocalContext(int threads, const stages::DistSession* dist) {
  stages::StageContext c;
  c.threads = threads;
  if (dist != nullptr && dist->comm != nullptr) {
    c.comm = dist->comm.get();
    c.rank = dist->comm->rank();
    c.world_size = dist->comm->world_size();
  }
  c.note = [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };
  return c;
}

}  // namespace topiary::cli
