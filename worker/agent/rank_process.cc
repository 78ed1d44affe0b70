#include "worker/agent/rank_process.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"

namespace topiary::agent {
namespace {

// In the child between fork and exec: only async-signal-safe calls.
[[noreturn]] void ExecChild(pid_t parent, int stdin_read, int proto_write, int log_fd, char* const* argv) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(127);  // the agent died before prctl
  setpgid(0, 0);
  dup2(stdin_read, 0);
  dup2(log_fd, 1);
  dup2(log_fd, 2);
  dup2(proto_write, kRankProtocolFd);
  // Everything else the agent holds (sockets, other ranks' pipes) stays behind.
  if (syscall(SYS_close_range, kRankProtocolFd + 1, ~0U, 0) != 0) {
    for (int fd = kRankProtocolFd + 1; fd < 4096; ++fd) close(fd);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);  // the agent blocks SIGTERM/SIGINT; the rank must not
  execv(argv[0], argv);
  _exit(127);
}

}  // namespace

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return absl::StrCat("killed by signal ", sig, " (", strsignal(sig), ")",
                        sig == SIGKILL ? "; out of memory or killed from outside" : "");
  }
  return absl::StrCat("ended with wait status ", status);
}

std::string LogTail(const std::string& path, int max_lines) {
  absl::StatusOr<std::string> text = ReadFileToString(path, size_t{64} << 20);
  if (!text.ok()) return "";
  std::vector<std::string> lines = absl::StrSplit(*text, '\n', absl::SkipEmpty());
  std::string out;
  for (size_t i = lines.size() > static_cast<size_t>(max_lines) ? lines.size() - max_lines : 0; i < lines.size(); ++i) {
    absl::StrAppend(&out, lines[i], "\n");
  }
  if (out.size() > 2048) out = "..." + out.substr(out.size() - 2048);
  return out;
}

absl::StatusOr<std::unique_ptr<RankProcess>> RankProcess::Start(const std::vector<std::string>& args,
                                                                const std::string& log, Callbacks callbacks) {
  int in[2], proto[2];
  if (pipe2(in, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  if (pipe2(proto, O_CLOEXEC) != 0) {
    close(in[0]), close(in[1]);
    return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  }
  const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    for (int fd : {in[0], in[1], proto[0], proto[1]}) close(fd);
    return absl::InternalError(absl::StrCat("open ", log, ": ", strerror(errno)));
  }
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) ExecChild(parent, in[0], proto[1], log_fd, argv.data());
  close(in[0]);
  close(proto[1]);
  close(log_fd);
  if (pid < 0) {
    close(in[1]), close(proto[0]);
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  std::unique_ptr<RankProcess> p(new RankProcess());
  p->pid_ = pid;
  p->stdin_fd_ = in[1];
  p->proto_fd_ = proto[0];
  p->log_ = log;
  p->callbacks_ = std::move(callbacks);
  p->reader_ = std::thread([raw = p.get()] { raw->Read(); });
  return p;
}

void RankProcess::Read() {
  FILE* f = fdopen(proto_fd_, "r");
  std::string line;
  if (f != nullptr) {
    char buf[65536];
    while (std::fgets(buf, sizeof(buf), f) != nullptr) {
      line += buf;
      if (line.empty() || line.back() != '\n') {
        if (line.size() > (1 << 20)) line.clear();  // an over-long line is dropped
        continue;
      }
      line.pop_back();
      absl::StatusOr<RankMessage> m = ParseRankLine(line);
      line.clear();
      if (m.ok() && callbacks_.message) callbacks_.message(*m);
    }
    std::fclose(f);
  }
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_.store(false);
    if (stdin_fd_ >= 0) close(stdin_fd_), stdin_fd_ = -1;
  }
  if (callbacks_.exited) callbacks_.exited(status, LogTail(log_));
}

void RankProcess::Tell(const std::string& word) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stdin_fd_ < 0) return;
  const std::string line = word + "\n";
  (void)!write(stdin_fd_, line.data(), line.size());
}

void RankProcess::Kill() {
  std::lock_guard<std::mutex> lock(mu_);
  if (running_.load()) {
    kill(-pid_, SIGKILL);  // its process group: the rank and anything it started
    kill(pid_, SIGKILL);
  }
}

RankProcess::~RankProcess() {
  Kill();
  if (reader_.joinable()) reader_.join();
}

}  // namespace topiary::agent
