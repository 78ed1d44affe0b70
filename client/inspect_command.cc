#include "client/inspect_command.h"

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "client/cli_util.h"
#include "common/status_macros.h"
#include "worker/model/config.h"

namespace topiary::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct InspectFlags {
  std::string model;
  bool json = false;
};

absl::Status RunInspect(const InspectFlags& f) {
  ASSIGN_OR_RETURN(model::ModelConfig c, model::LoadConfig(f.model));
  model::ParamCounts p = model::CountParams(c);
  int64_t disk = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(f.model, ec)) {
    if (e.is_regular_file(ec)) disk += static_cast<int64_t>(e.file_size(ec));
  }
  json j = {{"architecture", std::string(model::FamilyArchitecture(c.family))},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_attention_heads", c.num_attention_heads},
            {"num_key_value_heads", c.num_key_value_heads},
            {"head_dim", c.head_dim},
            {"num_hidden_layers", c.num_hidden_layers},
            {"vocab_size", c.vocab_size},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"dtype", c.torch_dtype},
            {"isomorphic", c.IsIsomorphic()},
            {"params",
             {{"total", p.total()},
              {"non_embedding", p.non_embedding()},
              {"embedding", p.embedding},
              {"lm_head", p.lm_head},
              {"attention", p.attention},
              {"mlp", p.mlp},
              {"norms", p.norms}}},
            {"size_on_disk_bytes", disk}};
  if (f.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return absl::OkStatus();
  }
  std::printf("%s  %s\n", f.model.c_str(), std::string(model::FamilyArchitecture(c.family)).c_str());
  std::printf("  hidden %lld  mlp %lld  heads %lld (kv %lld, head_dim %lld)  layers %lld  vocab %lld%s\n",
              (long long)c.hidden_size, (long long)c.intermediate_size, (long long)c.num_attention_heads,
              (long long)c.num_key_value_heads, (long long)c.head_dim, (long long)c.num_hidden_layers,
              (long long)c.vocab_size, c.tie_word_embeddings ? "  tied embeddings" : "");
  std::printf("  parameters %lld: embedding %lld, lm_head %lld, attention %lld, mlp %lld, norms %lld\n",
              (long long)p.total(), (long long)p.embedding, (long long)p.lm_head, (long long)p.attention,
              (long long)p.mlp, (long long)p.norms);
  std::printf("  dtype %s  size on disk %.2f MB%s\n", c.torch_dtype.c_str(), disk / 1e6,
              c.IsIsomorphic() ? "" : "  (not isomorphic: Topiary format)");
  return absl::OkStatus();
}

}  // namespace

void RegisterInspectCommand(CLI::App& app, CommandRegistry& registry) {
  auto f = std::make_shared<InspectFlags>();
  auto* cmd = app.add_subcommand("inspect", "config, parameter counts, dtype and size of a checkpoint");
  cmd->add_option("--model", f->model, "Hugging Face model directory")->required();
  cmd->add_flag("--json", f->json, "print JSON");
  registry.Add(cmd, [f] { return ReportStatus("inspect", RunInspect(*f)); });
}

}  // namespace topiary::cli
