// `topiary config`: the contexts of the API commands (client/contexts.h),
// kept the way kubectl keeps its own:
//   topiary config get-contexts                  the contexts, * marking the current one
//   topiary config current-context               its name
//   topiary config use-context NAME              make NAME current
//   topiary config set-context NAME [--server HOST:PORT] [--token-file F] [--tls-ca F] [--tls-cert F] [--tls-key F]
//   topiary config delete-context NAME
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/cli_util.h"
#include "client/commands.h"
#include "client/contexts.h"

namespace topiary::cli {
namespace {

struct ConfigFlags {
  std::string name;
  Context given;
};

int Fail(const char* command, const absl::Status& st) { return ReportStatus(absl::StrCat("config ", command), st); }

}  // namespace

void RegisterConfigCommands(CLI::App& app, CommandRegistry& registry) {
  CLI::App* config = app.add_subcommand("config", "named connections (contexts) of the API commands, as kubectl's");
  config->require_subcommand(1);
  config->footer(
      "The file: TOPIARY_CONFIG, else $XDG_CONFIG_HOME/topiary/config.yaml, else "
      "~/.config/topiary/config.yaml.\n");
  auto f = std::make_shared<ConfigFlags>();

  CLI::App* get = config->add_subcommand("get-contexts", "list the contexts; * marks the current one");
  registry.Add(get, [] {
    absl::StatusOr<ClientConfig> c = LoadClientConfig(DefaultClientConfigPath());
    if (!c.ok()) return Fail("get-contexts", c.status());
    std::printf("%-9s %-24s %-32s %s\n", "CURRENT", "NAME", "SERVER", "TLS");
    for (const Context& x : c->contexts) {
      std::printf("%-9s %-24s %-32s %s\n", x.name == c->current_context ? "*" : "", x.name.c_str(), x.server.c_str(),
                  x.tls_ca.empty() ? "off" : "on");
    }
    return kExitOk;
  });

  CLI::App* current = config->add_subcommand("current-context", "print the current context's name");
  registry.Add(current, [] {
    absl::StatusOr<ClientConfig> c = LoadClientConfig(DefaultClientConfigPath());
    if (!c.ok()) return Fail("current-context", c.status());
    if (c->current_context.empty()) {
      return Fail("current-context", absl::NotFoundError(absl::StrCat("no current context in ", c->path)));
    }
    std::printf("%s\n", c->current_context.c_str());
    return kExitOk;
  });

  CLI::App* use = config->add_subcommand("use-context", "make a context the current one");
  use->add_option("name", f->name, "context name")->required();
  registry.Add(use, [f] {
    absl::StatusOr<ClientConfig> c = LoadClientConfig(DefaultClientConfigPath());
    if (!c.ok()) return Fail("use-context", c.status());
    if (c->Find(f->name) == nullptr) {
      return Fail("use-context", absl::NotFoundError(absl::StrCat("no context '", f->name, "' in ", c->path)));
    }
    c->current_context = f->name;
    if (absl::Status st = SaveClientConfig(*c); !st.ok()) return Fail("use-context", st);
    std::printf("current context: %s\n", f->name.c_str());
    return kExitOk;
  });

  CLI::App* set = config->add_subcommand("set-context", "add a context, or change the given fields of one");
  set->add_option("name", f->name, "context name")->required();
  set->add_option("--server", f->given.server, "coordinator HOST:PORT");
  set->add_option("--token-file", f->given.token_file, "file whose first line is the bearer token");
  set->add_option("--tls-ca", f->given.tls_ca, "CA certificate of the coordinator (PEM): use TLS");
  set->add_option("--tls-cert", f->given.tls_cert, "client certificate (PEM): mutual TLS");
  set->add_option("--tls-key", f->given.tls_key, "client key (PEM)");
  registry.Add(set, [f] {
    absl::StatusOr<ClientConfig> c = LoadClientConfig(DefaultClientConfigPath());
    if (!c.ok()) return Fail("set-context", c.status());
    Context* x = nullptr;
    for (Context& each : c->contexts) {
      if (each.name == f->name) x = &each;
    }
    if (x == nullptr) {
      c->contexts.emplace_back();
      x = &c->contexts.back();
      x->name = f->name;
    }
    using Field = std::pair<const std::string*, std::string*>;
    for (const Field& field : {Field{&f->given.server, &x->server}, Field{&f->given.token_file, &x->token_file},
                               Field{&f->given.tls_ca, &x->tls_ca}, Field{&f->given.tls_cert, &x->tls_cert},
                               Field{&f->given.tls_key, &x->tls_key}}) {
      if (!field.first->empty()) *field.second = *field.first;
    }
    if (c->current_context.empty()) c->current_context = f->name;  // the first one is current
    if (absl::Status st = SaveClientConfig(*c); !st.ok()) return Fail("set-context", st);
    std::printf("context %s saved in %s\n", f->name.c_str(), c->path.c_str());
    return kExitOk;
  });

  CLI::App* del = config->add_subcommand("delete-context", "remove a context");
  del->add_option("name", f->name, "context name")->required();
  registry.Add(del, [f] {
    absl::StatusOr<ClientConfig> c = LoadClientConfig(DefaultClientConfigPath());
    if (!c.ok()) return Fail("delete-context", c.status());
    const size_t before = c->contexts.size();
    c->contexts.erase(
        std::remove_if(c->contexts.begin(), c->contexts.end(), [&](const Context& x) { return x.name == f->name; }),
        c->contexts.end());
    if (c->contexts.size() == before) {
      return Fail("delete-context", absl::NotFoundError(absl::StrCat("no context '", f->name, "' in ", c->path)));
    }
    if (c->current_context == f->name) c->current_context.clear();
    if (absl::Status st = SaveClientConfig(*c); !st.ok()) return Fail("delete-context", st);
    return kExitOk;
  });
}

}  // namespace topiary::cli
