#include "client/contexts.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/rpc/channel.h"
#include "common/status_macros.h"

namespace topiary::cli {
namespace {

constexpr size_t kMaxConfigBytes = 1 << 20;
constexpr size_t kMaxContexts = 1000;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

std::string ExpandHome(const std::string& path) {
  if (path.rfind("~/", 0) == 0 && !Env("HOME").empty()) return Env("HOME") + path.substr(1);
  return path;
}

absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

}  // namespace

const Context* ClientConfig::Find(const std::string& name) const {
  for (const Context& c : contexts) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::string DefaultClientConfigPath() {
  if (!Env("TOPIARY_CONFIG").empty()) return Env("TOPIARY_CONFIG");
  if (!Env("XDG_CONFIG_HOME").empty()) return Env("XDG_CONFIG_HOME") + "/topiary/config.yaml";
  return Env("HOME") + "/.config/topiary/config.yaml";
}

absl::StatusOr<ClientConfig> LoadClientConfig(const std::string& path) {
  ClientConfig config;
  config.path = path;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return config;
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, kMaxConfigBytes));
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return Bad(path, absl::StrCat("line ", e.mark.line + 1, ": ", e.msg));
  }
  if (root.IsNull()) return config;
  if (!root.IsMap()) return Bad(path, "expected a mapping with current-context and contexts");
  try {
    for (const auto& kv : root) {
      const std::string key = kv.first.as<std::string>();
      if (key == "current-context") {
        config.current_context = kv.second.as<std::string>();
      } else if (key == "contexts") {
        if (!kv.second.IsSequence()) return Bad(path, "contexts: expected a list");
        if (kv.second.size() > kMaxContexts) return Bad(path, absl::StrCat("more than ", kMaxContexts, " contexts"));
        for (size_t i = 0; i < kv.second.size(); ++i) {
          const YAML::Node& n = kv.second[i];
          const std::string where = absl::StrCat("contexts[", i, "]");
          if (!n.IsMap()) return Bad(path, where + ": expected a mapping");
          Context c;
          for (const auto& f : n) {
            const std::string name = f.first.as<std::string>();
            const std::string value = f.second.as<std::string>();
            if (name == "name")
              c.name = value;
            else if (name == "server")
              c.server = value;
            else if (name == "token-file")
              c.token_file = ExpandHome(value);
            else if (name == "tls-ca")
              c.tls_ca = ExpandHome(value);
            else if (name == "tls-cert")
              c.tls_cert = ExpandHome(value);
            else if (name == "tls-key")
              c.tls_key = ExpandHome(value);
            else
              return Bad(path, absl::StrCat(where, ".", name,
                                            ": unknown field (name, server, token-file, tls-ca, "
                                            "tls-cert, tls-key)"));
          }
          if (c.name.empty()) return Bad(path, where + ": no name");
          if (config.Find(c.name) != nullptr) return Bad(path, absl::StrCat(where, ": '", c.name, "' named twice"));
          config.contexts.push_back(std::move(c));
        }
      } else {
        return Bad(path, key + ": unknown field (current-context, contexts)");
      }
    }
  } catch (const YAML::Exception& e) {
    return Bad(path, absl::StrCat("line ", e.mark.line + 1, ": ", e.msg));
  }
  return config;
}

absl::Status SaveClientConfig(const ClientConfig& config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  if (!config.current_context.empty()) out << YAML::Key << "current-context" << YAML::Value << config.current_context;
  out << YAML::Key << "contexts" << YAML::Value << YAML::BeginSeq;
  for (const Context& c : config.contexts) {
    out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << c.name;
    for (const auto& [key, value] : {std::pair<const char*, const std::string*>{"server", &c.server},
                                     {"token-file", &c.token_file},
                                     {"tls-ca", &c.tls_ca},
                                     {"tls-cert", &c.tls_cert},
                                     {"tls-key", &c.tls_key}}) {
      if (!value->empty()) out << YAML::Key << key << YAML::Value << *value;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  const std::filesystem::path dir = std::filesystem::path(config.path).parent_path();
  std::error_code ec;
  if (!dir.empty() && !std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat(dir.string(), ": ", ec.message()));
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
  }
  return WriteFileAtomically(config.path, std::string(out.c_str()) + "\n");
}

absl::Status ResolveConnection(Connection* c) {
  if (c->server.empty()) c->server = Env("TOPIARY_SERVER");
  if (c->token.empty() && c->token_file.empty()) c->token = Env("TOPIARY_TOKEN");
  if (c->context.empty()) c->context = Env("TOPIARY_CONTEXT");
  const bool named = !c->context.empty();
  const std::string path = DefaultClientConfigPath();
  ASSIGN_OR_RETURN(ClientConfig config, LoadClientConfig(path));
  if (!named) c->context = config.current_context;
  if (!c->context.empty()) {
    const Context* ctx = config.Find(c->context);
    if (ctx == nullptr) {
      std::vector<std::string> names;
      for (const Context& x : config.contexts) names.push_back(x.name);
      return absl::InvalidArgumentError(absl::StrCat(named ? "--context" : "current-context", ": no context '",
                                                     c->context, "' in ", path, " (",
                                                     names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
    }
    if (c->server.empty()) c->server = ctx->server;
    if (c->token.empty() && c->token_file.empty()) c->token_file = ctx->token_file;
    if (c->tls_ca.empty()) c->tls_ca = ctx->tls_ca;
    if (c->tls_cert.empty()) c->tls_cert = ctx->tls_cert;
    if (c->tls_key.empty()) c->tls_key = ctx->tls_key;
  }
  if (c->server.empty()) c->server = "127.0.0.1:7070";
  if (c->token.empty() && !c->token_file.empty()) {
    absl::StatusOr<std::string> token = rpc::ReadTokenFile(c->token_file);
    if (!token.ok()) return absl::InvalidArgumentError(absl::StrCat("token file ", token.status().message()));
    c->token = *token;
  }
  return absl::OkStatus();
}

}  // namespace topiary::cli
