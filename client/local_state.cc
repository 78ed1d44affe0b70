#include "client/local_state.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/child_process.h"
#include "common/file_util.h"
#include "common/status_macros.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace topiary::cli {
namespace {

namespace fs = std::filesystem;

std::string RandomToken() {
  std::ifstream random("/dev/urandom", std::ios::binary);
  std::string bytes(24, '\0');
  random.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return absl::BytesToHexString(bytes);
}

absl::Status WritePrivate(const std::string& path, const std::string& text) {
  RETURN_IF_ERROR(WriteFileAtomically(path, text));
  chmod(path.c_str(), 0600);
  return absl::OkStatus();
}

// The port of a coordinator serving the state that answers a health check now.
int LivePort(const LocalState& s) {
  absl::StatusOr<std::string> text = ReadFileToString(s.Path("port"), 64);
  int port = 0;
  if (!text.ok()) return 0;
  std::vector<std::string> lines = absl::StrSplit(*text, '\n', absl::SkipEmpty());
  if (lines.empty() || !absl::SimpleAtoi(lines[0], &port) || port <= 0) return 0;
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  return stub->Check(&ctx, req, &resp).ok() ? port : 0;
}

}  // namespace

std::string BinaryDir() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}

absl::StatusOr<LocalState> OpenLocalState(const std::string& dir, bool fresh_tokens, const std::string& storage) {
  LocalState s;
  s.dir = fs::absolute(dir).lexically_normal().string();
  RETURN_IF_ERROR(MakeDirs(s.Path("logs")));
  chmod(s.dir.c_str(), 0700);
  if (fresh_tokens || !fs::exists(s.Path("tokens"))) {
    const std::string admin = RandomToken(), worker = RandomToken();
    RETURN_IF_ERROR(WritePrivate(s.Path("tokens"), absl::StrCat(admin, " local admin\n", worker, " workers worker\n")));
    RETURN_IF_ERROR(WritePrivate(s.Path("admin-token"), admin + "\n"));
    RETURN_IF_ERROR(WritePrivate(s.Path("worker-token"), worker + "\n"));
  }
  if (!storage.empty()) {
    RETURN_IF_ERROR(WriteFileAtomically(s.Path("storage"), storage + "\n"));
  } else if (!fs::exists(s.Path("storage"))) {
    return absl::NotFoundError(absl::StrCat("--state-dir: ", s.dir, " holds no topiary run state"));
  }
  return s;
}

absl::StatusOr<LocalCoordinator> AttachOrStartCoordinator(const LocalState& s, double lease_seconds,
                                                          double recovery_grace_seconds, int death_signal) {
  LocalCoordinator c;
  ASSIGN_OR_RETURN(std::string token, ReadFileToString(s.Path("admin-token"), 1024));
  c.token = std::string(absl::StripAsciiWhitespace(token));
  if (int port = LivePort(s); port > 0) {
    c.address = absl::StrCat("127.0.0.1:", port);
    return c;
  }
  ASSIGN_OR_RETURN(std::string storage, ReadFileToString(s.Path("storage"), 1 << 16));
  RemoveAll(s.Path("port")).IgnoreError();
  ChildOptions o;
  o.log = s.Path("logs/coordinator.log");
  o.death_signal = death_signal;
  ASSIGN_OR_RETURN(c.pid, SpawnChild({BinaryDir() + "/topiary-coordinator",
                                      "--listen",
                                      "127.0.0.1:0",
                                      "--state-dir",
                                      s.Path("db"),
                                      "--storage-root",
                                      std::string(absl::StripAsciiWhitespace(storage)),
                                      "--tokens",
                                      s.Path("tokens"),
                                      "--port-file",
                                      s.Path("port"),
                                      "--metrics-address",
                                      "",
                                      "--lease-seconds",
                                      absl::StrCat(lease_seconds),
                                      "--recovery-grace-seconds",
                                      absl::StrCat(recovery_grace_seconds),
                                      "--backoff-seconds",
                                      "0.5",
                                      "--drain-seconds",
                                      "2"},
                                     o));
  for (int i = 0; i < 400; ++i) {
    if (int port = LivePort(s); port > 0) {
      c.address = absl::StrCat("127.0.0.1:", port);
      return c;
    }
    if (PollChild(c.pid) != kStillRunning) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  StopChild(c.pid, SIGKILL, absl::Seconds(1));
  return absl::UnavailableError(absl::StrCat("the coordinator did not start; see ", s.Path("logs/coordinator.log"),
                                             ": ", ReadFileToString(o.log, 1 << 20).value_or("").substr(0, 2000)));
}

void StopCoordinator(LocalCoordinator& c, double seconds) {
  if (c.pid <= 0) return;
  StopChild(c.pid, SIGTERM, absl::Milliseconds(static_cast<int64_t>(seconds * 1000)));
  c.pid = -1;
}

}  // namespace topiary::cli
