// The context a stage runs in (docs/design.md, "Stages"): which rank of how
// many, the communicator between them, where progress goes and how a stop
// request arrives. Stages are plain functions over an options struct and
// this context, returning a typed result as absl::StatusOr; the CLI and the
// worker's rank process fill the same options structs. Torch-free.
//
// Thread safety: a context is used by one stage on one thread; `stop` may be
// written by another thread at any time.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

namespace topiary::dist {
class Communicator;
}

namespace topiary::stages {

// One progress report of a running stage.
struct Progress {
  std::string phase;  // loading, calibrating, scoring, training, evaluating, saving
  int64_t step = 0;   // work units done (training steps, batches, candidates)
  int64_t total_steps = 0;
  int64_t tokens = 0;            // tokens processed, all ranks
  double loss = -1;              // latest loss (-1: none)
  double tokens_per_second = 0;  // all ranks
  double mfu = -1;               // achieved FLOP/s over the measured GEMM peak (-1: unknown)
  double eta_seconds = -1;       // -1: unknown
  bool milestone = false;        // a phase change, the first or last step, an evaluation, a checkpoint
};

using ProgressSink = std::function<void(const Progress&)>;

// Values of StageContext::stop (the trainer's kStop* constants).
inline constexpr int kRun = 0;
inline constexpr int kCancel = 1;  // the job is cancelled: checkpoint at the next step boundary and stop
inline constexpr int kDrain = 2;   // the worker is draining: the same, and the task is retried elsewhere

struct StageContext {
  int rank = 0;
  int world_size = 1;
  dist::Communicator* comm = nullptr;            // null: one rank
  ProgressSink progress;                         // may be empty
  std::function<void(const std::string&)> note;  // one-line messages for a person (may be empty)
  const std::atomic<int>* stop = nullptr;        // null: never asked to stop
  int threads = 0;                               // CPU threads (0: every hardware thread)

  bool leader() const { return rank == 0; }
  void Report(const Progress& p) const {
    if (progress) progress(p);
  }
  void Note(const std::string& line) const {
    if (note) note(line);
  }
  // A milestone with only a phase.
  void Phase(const std::string& phase) const {
    Progress p;
    p.phase = phase;
    p.milestone = true;
    Report(p);
  }
  bool StopRequested() const { return stop != nullptr && stop->load() != kRun; }
};

}  // namespace topiary::stages
