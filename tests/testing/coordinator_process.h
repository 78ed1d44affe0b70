// The real topiary-coordinator as a child process for integration tests:
// port 0 (or a fixed address), a port file, a gRPC stub of the job API.
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "testing/processes.h"
#include "topiary/v1/job_service.grpc.pb.h"

namespace topiary::testing {

class Coordinator {
 public:
  // `dir` holds state/, root/ (the storage root), tokens and the logs.
  explicit Coordinator(const std::string& dir, std::vector<std::string> extra = {})
      : dir_(dir), extra_(std::move(extra)) {}
  ~Coordinator() { Kill(SIGKILL); }

  // Starts the process and waits for its port file; with `connect`, also
  // makes an insecure channel and a job-API stub.
  void Start(bool connect = true) {
    std::filesystem::remove(dir_ + "/port");
    std::vector<std::string> args = {BinDir() + "/topiary-coordinator",
                                     "--listen",
                                     listen_,
                                     "--state-dir",
                                     dir_ + "/state",
                                     "--storage-root",
                                     dir_ + "/root",
                                     "--tokens",
                                     dir_ + "/tokens",
                                     "--metrics-address",
                                     "127.0.0.1:0",
                                     "--port-file",
                                     dir_ + "/port",
                                     "--drain-seconds",
                                     "2"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    pid_ = SpawnProcess(args, dir_ + "/coordinator.log");
    ASSERT_GT(pid_, 0);
    for (int i = 0; i < 200 && !std::filesystem::exists(dir_ + "/port"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    auto port = ReadFileToString(dir_ + "/port", 64);
    ASSERT_TRUE(port.ok()) << "the coordinator did not start: "
                           << *ReadFileToString(dir_ + "/coordinator.log", 1 << 20);
    std::vector<std::string> ports = absl::StrSplit(*port, '\n', absl::SkipEmpty());
    ASSERT_EQ(ports.size(), 3u);  // API, metrics, health (0: none)
    port_ = std::stoi(ports[0]);
    metrics_port_ = std::stoi(ports[1]);
    health_port_ = std::stoi(ports[2]);
    if (!connect) return;
    channel_ = grpc::CreateChannel("127.0.0.1:" + ports[0], grpc::InsecureChannelCredentials());
    stub_ = v1::JobService::NewStub(channel_);
  }
  // Sends `sig` and returns the exit code (-signal when killed).
  int Kill(int sig) {
    if (pid_ <= 0) return 0;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
  v1::JobService::Stub& api() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  int metrics_port() const { return metrics_port_; }
  int health_port() const { return health_port_; }
  int port() const { return port_; }

  // Listen on a fixed address (so that workers reconnect after a restart).
  void set_listen(const std::string& address) { listen_ = address; }

 private:
  std::string dir_, listen_ = "127.0.0.1:0";
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
  int port_ = 0, metrics_port_ = 0, health_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

// A free loopback port (bound and released).
inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// A plain HTTP/1.0 GET of /metrics on loopback; the body.
inline std::string ScrapeMetrics(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return "";
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) return "";
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) out.append(buf, n);
  close(fd);
  const size_t body = out.find("\r\n\r\n");
  return body == std::string::npos ? "" : out.substr(body + 4);
}

}  // namespace topiary::testing
