// Runs several copies of a program as separate processes (the ranks of a
// distributed test) and collects their exit codes and output. A process
// still running at the deadline is killed and reported with exit code -9,
// so a hang fails the test instead of stalling CTest.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "common/file_util.h"

extern char** environ;

namespace topiary::testing {

struct ProcessResult {
  int exit_code = -1;      // -signal when killed by a signal
  std::string output;      // stdout and stderr together
  int64_t max_rss_kb = 0;  // peak resident set (getrusage ru_maxrss)
};

// The directory of the built binaries (CTest sets TOPIARY_BIN_DIR).
inline std::string BinDir() {
  const char* d = std::getenv("TOPIARY_BIN_DIR");
  return d ? d : "build/bin";
}

// Starts one process with output to `log`; returns its pid (-1 on failure).
inline pid_t SpawnProcess(const std::vector<std::string>& args, const std::string& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

inline std::vector<ProcessResult> RunProcesses(const std::vector<std::vector<std::string>>& argvs,
                                               const std::string& log_dir, std::chrono::seconds deadline) {
  std::vector<pid_t> pids;
  std::vector<std::string> logs;
  for (size_t i = 0; i < argvs.size(); ++i) {
    logs.push_back(log_dir + "/proc" + std::to_string(i) + ".log");
    pid_t pid = SpawnProcess(argvs[i], logs.back());
    pids.push_back(pid);
  }
  std::vector<ProcessResult> out(argvs.size());
  std::vector<bool> done(argvs.size(), false);
  const auto end = std::chrono::steady_clock::now() + deadline;
  size_t remaining = argvs.size();
  for (size_t i = 0; i < pids.size(); ++i) {
    if (pids[i] < 0) done[i] = true, --remaining, out[i].exit_code = -127;
  }
  while (remaining > 0) {
    for (size_t i = 0; i < pids.size(); ++i) {
      if (done[i]) continue;
      int status = 0;
      struct rusage usage {};
      if (wait4(pids[i], &status, WNOHANG, &usage) == pids[i]) {
        out[i].max_rss_kb = usage.ru_maxrss;
        out[i].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        done[i] = true;
        --remaining;
      }
    }
    if (remaining > 0 && std::chrono::steady_clock::now() > end) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (!done[i]) kill(pids[i], SIGKILL);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (size_t i = 0; i < logs.size(); ++i) {
    auto text = ReadFileToString(logs[i]);
    out[i].output = text.ok() ? *text : "";
  }
  return out;
}

}  // namespace topiary::testing
