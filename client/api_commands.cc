#include "client/api_commands.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <random>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli_util.h"
#include "client/contexts.h"
#include "client/job_view.h"
#include "client/local_state.h"
#include "common/report/job_report.h"
#include "common/file_util.h"
#include "common/spec/spec_io.h"
#include "common/status_macros.h"
#include "common/units.h"
#include "topiary/v1/job_service.grpc.pb.h"

namespace topiary::cli {
namespace {

inline constexpr int kExitUnreachable = 3;
inline constexpr int kExitDenied = 4;
inline constexpr int kExitJobFailed = 5;
inline constexpr int kExitJobCancelled = 6;

struct ApiFlags {
  std::string server, token, token_file, context, tls_ca, tls_cert, tls_key, output = "table", state_dir;
  double timeout = 30;
  // per command
  std::string id, file, request_id, page_token;
  bool wait = false, all = false;
  int page_size = 50;
  int64_t from_seq = 0;
  std::vector<std::string> states, labels;
};

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

class Client {
 public:
  static absl::StatusOr<Client> Connect(const ApiFlags& f) {
    if (f.output != "table" && f.output != "json" && f.output != "yaml") {
      return absl::InvalidArgumentError(absl::StrCat("--output: '", f.output, "' is not table, json or yaml"));
    }
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
    if (!f.tls_ca.empty() || !f.tls_cert.empty()) {
      grpc::SslCredentialsOptions o;
      if (!f.tls_ca.empty()) {
        ASSIGN_OR_RETURN(o.pem_root_certs, ReadFileToString(f.tls_ca, 1 << 20));
      }
      if (!f.tls_cert.empty()) {
        ASSIGN_OR_RETURN(o.pem_cert_chain, ReadFileToString(f.tls_cert, 1 << 20));
        ASSIGN_OR_RETURN(o.pem_private_key, ReadFileToString(f.tls_key, 1 << 20));
      }
      creds = grpc::SslCredentials(o);
    }
    Client c;
    c.flags_ = f;
    c.stub_ = v1::JobService::NewStub(grpc::CreateChannel(f.server, creds));
    return c;
  }
  std::unique_ptr<grpc::ClientContext> Ctx(bool streaming = false) const {
    auto c = std::make_unique<grpc::ClientContext>();
    if (!flags_.token.empty()) c->AddMetadata("authorization", "Bearer " + flags_.token);
    if (!streaming) {
      c->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(flags_.timeout * 1000)));
    }
    return c;
  }
  v1::JobService::Stub& api() { return *stub_; }
  const ApiFlags& flags() const { return flags_; }

 private:
  ApiFlags flags_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

void BlockStyle(YAML::Node node) {
  node.SetStyle(YAML::EmitterStyle::Block);
  if (node.IsMap()) {
    for (auto kv : node) BlockStyle(kv.second);
  } else if (node.IsSequence()) {
    for (auto v : node) BlockStyle(v);
  }
}

std::string ToYaml(const std::string& json) {
  YAML::Node node = YAML::Load(json);  // JSON is YAML
  BlockStyle(node);
  YAML::Emitter e;
  e << node;
  return std::string(e.c_str()) + "\n";
}

std::string Time(int64_t micros) {
  if (micros <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(micros / 1000000);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", std::gmtime(&t));
  return buf;
}

std::string Short(const std::string& name, const char* prefix) {
  std::string s = name;
  if (s.rfind(prefix, 0) == 0) s = s.substr(std::string(prefix).size());
  return s;
}

std::string JobState(v1::JobState s) { return Short(v1::JobState_Name(s), "JOB_"); }
std::string StageState(v1::StageState s) { return Short(v1::StageState_Name(s), "STAGE_"); }

void PrintJobs(const ApiFlags& f, const std::vector<v1::Job>& jobs, const std::string& next = "") {
  if (f.output != "table") {
    v1::ListJobsResponse r;
    for (const v1::Job& j : jobs) *r.add_jobs() = j;
    r.set_next_page_token(next);
    const std::string json = jobs.size() == 1 && next.empty() && f.id.size() ? ToJson(jobs[0]) : ToJson(r);
    std::printf("%s", f.output == "json" ? (json + "\n").c_str() : ToYaml(json).c_str());
    return;
  }
  std::printf("%-21s  %-24s  %-10s  %-10s  %-19s  %s\n", "ID", "NAME", "STATE", "OWNER", "CREATED (UTC)", "STAGES");
  for (const v1::Job& j : jobs) {
    std::vector<std::string> stages;
    for (const v1::Stage& s : j.stages()) stages.push_back(absl::StrCat(s.name(), ":", StageState(s.state())));
    std::printf("%-21s  %-24s  %-10s  %-10s  %-19s  %s\n", j.id().c_str(), j.spec().name().substr(0, 24).c_str(),
                JobState(j.state()).c_str(), j.owner().c_str(), Time(j.create_time_micros()).c_str(),
                absl::StrJoin(stages, " ").c_str());
    if (j.state() == v1::JOB_QUEUED && !j.waiting_reason().empty())
      std::printf("    waiting: %s\n", j.waiting_reason().c_str());
    if (!j.error().empty()) std::printf("    error: %s\n", j.error().c_str());
  }
  if (!next.empty()) std::printf("(more: --page-token %s)\n", next.c_str());
}

std::string RandomRequestId() {
  std::random_device rd;
  return absl::StrFormat("cli-%08x%08x%08x", rd(), rd(), rd());
}

int ExitFor(v1::JobState s) {
  if (s == v1::JOB_SUCCEEDED) return kExitOk;
  if (s == v1::JOB_CANCELLED) return kExitJobCancelled;
  return kExitJobFailed;
}

// Streams the job's events until it finishes (reconnecting with the last
// sequence number when the stream breaks); exits with the job's outcome.
absl::StatusOr<int> Watch(Client& c, const std::string& id, int64_t from_seq) {
  const bool table = c.flags().output == "table";
  JobView view(stdout, isatty(STDOUT_FILENO) && table);
  ASSIGN_OR_RETURN(v1::JobState state, StreamJob(
                                           c.api(), [&] { return c.Ctx(true); }, id, from_seq,
                                           [&](const v1::WatchJobResponse& r) {
                                             if (table) return view.Show(r);
                                             if (!r.has_event()) return;
                                             std::string j = ToJson(r.event());
                                             std::printf("%s", c.flags().output == "json"
                                                                   ? (j + "\n").c_str()
                                                                   : ("---\n" + ToYaml(j)).c_str());
                                             std::fflush(stdout);
                                           }));
  view.Close();
  return ExitFor(state);
}

int Report(const char* command, const absl::Status& s) {
  if (s.ok()) return kExitOk;
  const int code = ReportStatus(command, s);  // prints the one line
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnreachable;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kExitDenied;
    default:
      return code;
  }
}

void AddCommon(CLI::App* cmd, ApiFlags* f) {
  // Empty until given: the environment and the context fill the rest (client/contexts.h).
  cmd->add_option("--server", f->server,
                  "coordinator HOST:PORT (env TOPIARY_SERVER; else the context's; else "
                  "127.0.0.1:7070)");
  cmd->add_option("--token", f->token, "bearer token (env TOPIARY_TOKEN)");
  cmd->add_option("--token-file", f->token_file, "file whose first line is the bearer token");
  cmd->add_option("--context", f->context,
                  "a named context of the config file (env TOPIARY_CONTEXT; default: its current-context)");
  cmd->add_option("--tls-ca", f->tls_ca, "CA certificate of the coordinator: use TLS");
  cmd->add_option("--tls-cert", f->tls_cert, "client certificate (mutual TLS)");
  cmd->add_option("--tls-key", f->tls_key, "client key (mutual TLS)");
  cmd->add_option("--output,-o", f->output, "table | json | yaml")->capture_default_str();
  cmd->add_option("--timeout", f->timeout, "seconds per call")->capture_default_str();
  cmd->add_option("--state-dir", f->state_dir,
                  "the state of a `topiary run` (its coordinator, or one started for this command)");
}

using Runner = std::function<absl::StatusOr<int>(Client&, const ApiFlags&)>;

void AddApi(CommandRegistry& registry, CLI::App* cmd, std::shared_ptr<ApiFlags> f, const char* name, Runner run) {
  registry.Add(cmd, [f, name, run]() -> int {
    ApiFlags flags = *f;
    LocalCoordinator local;
    if (!flags.state_dir.empty()) {  // a topiary run's state: its coordinator, or one for this command
      absl::StatusOr<LocalState> state = OpenLocalState(flags.state_dir, false, "");
      if (!state.ok()) return Report(name, state.status());
      absl::StatusOr<LocalCoordinator> c = AttachOrStartCoordinator(*state, 3600, 86400, SIGTERM);
      if (!c.ok()) return Report(name, c.status());
      local = *c;
      flags.server = local.address;
      flags.token = local.token;
    } else {
      Connection conn{flags.server,   flags.token,   flags.token_file, flags.tls_ca,
                      flags.tls_cert, flags.tls_key, flags.context};
      if (absl::Status st = ResolveConnection(&conn); !st.ok()) return Report(name, st);
      flags.server = conn.server;
      flags.token = conn.token;
      flags.tls_ca = conn.tls_ca;
      flags.tls_cert = conn.tls_cert;
      flags.tls_key = conn.tls_key;
    }
    absl::StatusOr<Client> c = Client::Connect(flags);
    int code = 0;
    if (!c.ok()) {
      code = Report(name, c.status());
    } else {
      absl::StatusOr<int> r = run(*c, flags);
      code = r.ok() ? *r : Report(name, r.status());
    }
    StopCoordinator(local, 5);
    return code;
  });
}

CLI::App* Command(CLI::App& app, const char* name, const char* help, std::shared_ptr<ApiFlags> f, bool id) {
  CLI::App* cmd = app.add_subcommand(name, help);
  if (id) cmd->add_option("id", f->id, "job id")->required();
  AddCommon(cmd, f.get());
  return cmd;
}

}  // namespace

void RegisterApiCommands(CLI::App& app, CommandRegistry& registry) {
  RegisterConfigCommands(app, registry);
  {
    auto f = std::make_shared<ApiFlags>();
    CLI::App* cmd = Command(app, "submit", "submit a job spec (YAML or JSON) to the coordinator", f, false);
    cmd->add_option("spec", f->file, "job spec file")->required();
    cmd->add_option("--request-id", f->request_id, "idempotency key (default: a fresh random one)");
    cmd->add_flag("--wait", f->wait, "watch the job until it finishes; exit with its outcome");
    AddApi(registry, cmd, f, "submit", [](Client& c, const ApiFlags& f) -> absl::StatusOr<int> {
      ASSIGN_OR_RETURN(std::string text, ReadFileToString(f.file, 16 << 20));
      ASSIGN_OR_RETURN(v1::JobSpec spec, spec::ParseJobSpec(text));
      v1::CreateJobRequest req;
      *req.mutable_spec() = spec;
      req.set_request_id(f.request_id.empty() ? RandomRequestId() : f.request_id);
      v1::Job job;
      grpc::Status st;
      for (int attempt = 0; attempt < 4; ++attempt) {  // the same request id: a retry never makes two jobs
        st = c.api().CreateJob(c.Ctx().get(), req, &job);
        if (st.error_code() != grpc::StatusCode::UNAVAILABLE) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(300 << attempt));
      }
      RETURN_IF_ERROR(FromGrpc(st));
      if (f.output == "table") {
        std::printf("%s\n", job.id().c_str());
      } else {
        std::string j = ToJson(job);
        std::printf("%s", f.output == "json" ? (j + "\n").c_str() : ToYaml(j).c_str());
      }
      std::fflush(stdout);
      if (!f.wait) return kExitOk;
      return Watch(c, job.id(), 0);
    });
  }
  {
    auto f = std::make_shared<ApiFlags>();
    CLI::App* cmd = Command(app, "get", "show one job", f, true);
    AddApi(registry, cmd, f, "get", [](Client& c, const ApiFlags& f) -> absl::StatusOr<int> {
      v1::GetJobRequest req;
      req.set_id(f.id);
      v1::Job job;
      RETURN_IF_ERROR(FromGrpc(c.api().GetJob(c.Ctx().get(), req, &job)));
      PrintJobs(f, {job});
      return kExitOk;
    });
  }
  {
    auto f = std::make_shared<ApiFlags>();
    CLI::App* cmd = Command(app, "list", "list jobs, newest first", f, false);
    cmd->add_option("--state", f->states, "only jobs in this state (repeatable): queued, running, succeeded, ...");
    cmd->add_option("--label", f->labels, "only jobs with label KEY=VALUE (repeatable)");
    cmd->add_option("--page-size", f->page_size, "jobs per page")->capture_default_str();
    cmd->add_option("--page-token", f->page_token, "continue a listing");
    cmd->add_flag("--all", f->all, "follow every page");
    AddApi(registry, cmd, f, "list", [](Client& c, const ApiFlags& f) -> absl::StatusOr<int> {
      v1::ListJobsRequest req;
      req.set_page_size(f.page_size);
      req.set_page_token(f.page_token);
      for (const std::string& s : f.states) {
        v1::JobState state;
        std::string name = "JOB_" + s;
        for (char& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        if (!v1::JobState_Parse(name, &state) || state == v1::JOB_STATE_UNSPECIFIED) {
          return absl::InvalidArgumentError(absl::StrCat("--state: '", s, "' is not a job state"));
        }
        req.add_states(state);
      }
      for (const std::string& l : f.labels) {
        std::vector<std::string> kv = absl::StrSplit(l, absl::MaxSplits('=', 1));
        if (kv.size() != 2 || kv[0].empty())
          return absl::InvalidArgumentError(absl::StrCat("--label: '", l, "' is not KEY=VALUE"));
        (*req.mutable_labels())[kv[0]] = kv[1];
      }
      std::vector<v1::Job> jobs;
      std::string next;
      do {
        v1::ListJobsResponse resp;
        RETURN_IF_ERROR(FromGrpc(c.api().ListJobs(c.Ctx().get(), req, &resp)));
        for (const v1::Job& j : resp.jobs()) jobs.push_back(j);
        next = resp.next_page_token();
        req.set_page_token(next);
      } while (f.all && !next.empty());
      PrintJobs(f, jobs, next);
      return kExitOk;
    });
  }
  {
    auto f = std::make_shared<ApiFlags>();
    CLI::App* cmd = Command(
        app, "watch", "follow a job's events until it finishes (exit: 0 succeeded, 5 failed, 6 cancelled)", f, true);
    cmd->add_option("--from-seq", f->from_seq, "only events after this sequence number")->capture_default_str();
    AddApi(registry, cmd, f, "watch", [](Client& c, const ApiFlags& f) { return Watch(c, f.id, f.from_seq); });
  }
  {
    auto f = std::make_shared<ApiFlags>();
    CLI::App* cmd = Command(app, "cancel", "cancel a queued or running job", f, true);
    AddApi(registry, cmd, f, "cancel", [](Client& c, const ApiFlags& f) -> absl::StatusOr<int> {
      v1::CancelJobRequest req;
      req.set_id(f.id);
      v1::Job job;
      RETURN_IF_ERROR(FromGrpc(c.api().CancelJob(c.Ctx().get(), req, &job)));
      if (f.output == "table") {
        std::printf("%s %s\n", job.id().c_str(), JobState(job.state()).c_str());
      } else {
        PrintJobs(f, {job});
      }
      return kExitOk;
    });
  }
  {
    auto f = std::make_shared<ApiFlags>();
    CLI::App* cmd = Command(app, "delete", "delete a finished job and its events", f, true);
    AddApi(registry, cmd, f, "delete", [](Client& c, const ApiFlags& f) -> absl::StatusOr<int> {
      v1::DeleteJobRequest req;
      req.set_id(f.id);
      v1::DeleteJobResponse resp;
      RETURN_IF_ERROR(FromGrpc(c.api().DeleteJob(c.Ctx().get(), req, &resp)));
      if (f.output == "table") std::printf("deleted %s\n", f.id.c_str());
      return kExitOk;
    });
  }
  {
    auto f = std::make_shared<ApiFlags>();
    CLI::App* cmd = Command(app, "report", "print a finished job's report", f, true);
    AddApi(registry, cmd, f, "report", [](Client& c, const ApiFlags& f) -> absl::StatusOr<int> {
      v1::GetJobReportRequest req;
      req.set_id(f.id);
      v1::JobReport r;
      RETURN_IF_ERROR(FromGrpc(c.api().GetJobReport(c.Ctx().get(), req, &r)));
      if (f.output == "table") {
        nlohmann::json j = nlohmann::json::parse(r.report_json(), nullptr, false);
        if (j.is_discarded()) return absl::InternalError("the coordinator sent a report that is not JSON");
        std::printf("%s", report::RenderSummary(j, r.report_dir()).c_str());
      } else {
        std::printf("%s", f.output == "yaml" ? ToYaml(r.report_json()).c_str() : (r.report_json() + "\n").c_str());
      }
      return kExitOk;
    });
  }
}

}  // namespace topiary::cli
