// The worker agent end to end: the real coordinator, real topiary-worker
// processes (each rank a topiary-rank child) and real stages on the bundled
// teacher and the King James text, over loopback:
//   - a job with every stage kind succeeds across two workers; its search
//     probes run in parallel and later stages use the fan-in's choice; its
//     exported model, evaluated by `topiary eval`, gives the loss its
//     evaluate stage reported;
//   - 2-rank importance and 2-rank distillation placed across two workers
//     equal the one-process CLI runs;
//   - a worker killed (or drained) mid-distillation: the task retries on the
//     other worker as an infrastructure failure and resumes from the last
//     checkpoint, ending where an uninterrupted run ends;
//   - the coordinator killed mid-distillation: ranks keep running, the job
//     completes, no event is lost;
//   - cancellation stops every rank at a step boundary, keeping the checkpoint;
//   - a corrupt teacher fails its job with the loader's reason; a rank that
//     aborts fails its attempt and the worker keeps serving; a stage that
//     cannot fit in memory is refused with its estimate.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/file_util.h"
#include "testing/coordinator_process.h"
#include "testing/job_client.h"
#include "testing/processes.h"

namespace topiary {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::JobClient;

constexpr char kUser[] = "user-token-0123456789ab";
constexpr char kWorker[] = "worker-token-0123456789";

std::string SourceDir() {
  const char* d = std::getenv("TOPIARY_SOURCE_DIR");
  return d ? d : ".";
}

std::string KjvDir() {
  const char* d = std::getenv("TOPIARY_KJV_DIR");
  return d ? d : "build/kjv";
}

json ReadJson(const std::string& path) {
  auto text = ReadFileToString(path, 1 << 26);
  return text.ok() ? json::parse(*text, nullptr, false) : json();
}

// One field of every step in a train_log.jsonl.
std::vector<double> LogField(const std::string& train_log, const char* field = "loss") {
  std::vector<double> out;
  std::ifstream in(train_log);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains(field)) out.push_back(j[field].get<double>());
  }
  return out;
}
std::vector<double> Losses(const std::string& train_log) { return LogField(train_log); }

// Processes whose command line mentions `needle` (orphans of a killed worker).
int ProcessesMentioning(const std::string& needle) {
  int n = 0;
  DIR* d = opendir("/proc");
  while (dirent* e = d ? readdir(d) : nullptr) {
    if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
    auto cmd = ReadFileToString(absl::StrCat("/proc/", e->d_name, "/cmdline"), 1 << 16);
    if (!cmd.ok()) continue;
    std::string s = *cmd;
    std::replace(s.begin(), s.end(), '\0', ' ');
    if (s.find(needle) != std::string::npos && s.find("topiary-rank") != std::string::npos) ++n;
  }
  if (d) closedir(d);
  return n;
}

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = *MakeTempDir("topiary-worker-test");
    root_ = dir_ + "/root";
    fs::create_directories(root_ + "/models");
    fs::create_directories(root_ + "/data");
    fs::copy(SourceDir() + "/models/kjv-llama-8m", root_ + "/models/kjv-llama-8m", fs::copy_options::recursive);
    for (const char* f : {"kjv-train.bin", "kjv-val.bin", "kjv-tasks.jsonl"}) {
      fs::copy(KjvDir() + "/" + f, root_ + "/data/" + f);
    }
    std::ofstream(dir_ + "/tokens") << kUser << " alice user\n" << kWorker << " workers worker\n";
    std::ofstream(dir_ + "/worker-token") << kWorker << "\n";
    workers_ = std::make_unique<testing::Workers>(dir_);
  }
  void TearDown() override {
    workers_.reset();
    coordinator_.reset();
    if (!getenv("KEEP")) RemoveAll(dir_).IgnoreError();
  }
  void StartCoordinator(std::vector<std::string> extra = {}, const std::string& listen = "") {
    extra.insert(extra.end(), {"--lease-seconds", "3", "--backoff-seconds", "0.2"});
    coordinator_ = std::make_unique<testing::Coordinator>(dir_, extra);
    if (!listen.empty()) coordinator_->set_listen(listen);
    coordinator_->Start();
    client_ = std::make_unique<JobClient>(coordinator_.get(), kUser);
  }
  pid_t StartWorker(const std::string& name, int slots, std::vector<std::string> extra = {}) {
    return workers_->Start(name, slots, coordinator_->port(), extra);
  }
  // A spec over the test's storage root: "{root}" in `stages` is replaced.
  std::string Spec(const std::string& stages, int ranks = 2, int max_retries = 0,
                   const std::string& teacher = "kjv-llama-8m") const {
    return absl::StrReplaceAll(
        absl::StrCat("name: w\nteacher: {path: {root}/models/", teacher, "}\n",
                     "data:\n"
                     "  calibration: {path: {root}/data/kjv-train.bin, format: u16, samples: 8, seq_len: 64}\n"
                     "  train: {path: {root}/data/kjv-train.bin, format: u16, seq_len: 64}\n"
                     "  eval: {path: {root}/data/kjv-val.bin, format: u16, seq_len: 64, samples: 8}\n"
                     "stages:\n",
                     stages, "resources: {ranks: ", ranks, "}\nmax_retries: ", max_retries, "\n"),
        {{"{root}", root_}});
  }
  std::string JobDir(const std::string& id) const { return root_ + "/jobs/" + id; }
  // Runs the topiary CLI; its exit code and output.
  testing::ProcessResult Topiary(std::vector<std::string> args) {
    args.insert(args.begin(), testing::BinDir() + "/topiary");
    return testing::RunProcesses({args}, dir_, std::chrono::seconds(300))[0];
  }
  // `topiary distill` of job id's pruned student from `teacher` into
  // dir_/cli-distill: the run a job's distill stage is compared with.
  testing::ProcessResult CliDistill(const std::string& id, const std::string& teacher, int steps,
                                    std::vector<std::string> more = {}) {
    std::vector<std::string> args = {"distill",
                                     "--teacher",
                                     teacher,
                                     "--student",
                                     JobDir(id) + "/prune/model",
                                     "--data",
                                     root_ + "/data/kjv-train.bin",
                                     "--eval-data",
                                     root_ + "/data/kjv-val.bin",
                                     "--seq-len",
                                     "64",
                                     "--steps",
                                     std::to_string(steps),
                                     "--global-batch",
                                     "8",
                                     "--micro-batch",
                                     "2",
                                     "--lr",
                                     "1e-3",
                                     "--min-lr",
                                     "1e-4",
                                     "--warmup",
                                     "2",
                                     "--dtype",
                                     "fp32",
                                     "--log-every",
                                     "1",
                                     "--threads",
                                     "1",
                                     "--peak-flops",
                                     "0",
                                     "--out",
                                     dir_ + "/cli-distill"};
    args.insert(args.end(), more.begin(), more.end());
    return Topiary(std::move(args));
  }
  // The worker whose log says it registered as `worker_id`.
  std::string NameOf(const std::string& worker_id, const std::vector<std::string>& names) const {
    for (const std::string& n : names) {
      if (workers_->Log(n).find("registered as " + worker_id) != std::string::npos) return n;
    }
    return "";
  }

  std::string dir_, root_;
  std::unique_ptr<testing::Coordinator> coordinator_;
  std::unique_ptr<JobClient> client_;
  std::unique_ptr<testing::Workers> workers_;
};

const char kPrefix[] =
    "  - importance: {depth: [lm_loss], batch: 2}\n"
    "  - prune: {target: {hidden_size: 192, intermediate_size: 512, num_attention_heads: 6, num_key_value_heads: 3}}\n";

TEST_F(WorkerTest, EveryStageKindThroughTwoWorkers) {
  StartCoordinator();
  StartWorker("a", 2);
  StartWorker("b", 2);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string id =
      client_->Submit(Spec("  - teacher_correction: {tokens: 4K, lr: 1e-4, global_batch: 4}\n"
                           "  - importance: {depth: [lm_loss], batch: 2}\n"
                           "  - prune: {search: {params: '0.6', candidates: 4, probe_tokens: 2K, eval_windows: 4}}\n"
                           "  - distill: {tokens: 8K, lr: 2e-3, global_batch: 8, checkpoint_every: 4}\n"
                           "  - streamline: {drop: 2, tokens: 2K, lr: 1e-3, global_batch: 4}\n"
                           "  - evaluate: {tasks: [{root}/data/kjv-tasks.jsonl], max_examples: 20}\n"
                           "  - export: {path: {root}/out/final, dtype: bf16}\n"));
  v1::Job job = client_->WaitFor(id, JobClient::Finished, 600);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.DebugString() << workers_->Log("a") << workers_->Log("b");
  std::printf("the full pipeline (7 stages, 2 workers) took %.1f s\n", seconds);
  for (const v1::Stage& s : job.stages()) EXPECT_EQ(s.state(), v1::STAGE_SUCCEEDED) << s.name();
  EXPECT_EQ(job.output_path(), root_ + "/out/final");

  // The search: four probes, several at once; the fan-in's choice is what distillation trained.
  const v1::Stage& search = job.stages(2);
  ASSERT_EQ(search.tasks_size(), 4);
  int assigned_before_first_done = 0;
  for (const v1::Event& e : client_->Events(id)) {
    if (e.kind() != v1::EVENT_KIND_TASK_STATE || e.stage() != "search") continue;
    if (e.task_state() == v1::TASK_SUCCEEDED) break;
    assigned_before_first_done += e.task_state() == v1::TASK_ASSIGNED;
  }
  EXPECT_GE(assigned_before_first_done, 2);
  const json fan_in = json::parse(search.result_json());
  const int best = fan_in["best_task"];
  const json best_probe = ReadJson(JobDir(id) + "/search/probe-" + std::to_string(best) + "/result.json");
  for (int i = 0; i < 4; ++i) {
    const json probe = ReadJson(JobDir(id) + "/search/probe-" + std::to_string(i) + "/result.json");
    ASSERT_TRUE(probe.contains("loss")) << probe.dump();
    EXPECT_TRUE(probe.contains("distilled_loss"));  // probe_tokens: each probe was distilled before scoring
    EXPECT_GE(probe["loss"].get<double>(), best_probe["loss"].get<double>());
  }
  const json distill = ReadJson(JobDir(id) + "/distill/result.json");
  EXPECT_EQ(distill["config"]["hidden_size"], best_probe["config"]["hidden_size"]);
  EXPECT_EQ(distill["config"]["intermediate_size"], best_probe["config"]["intermediate_size"]);
  EXPECT_EQ(distill["config"]["num_hidden_layers"], best_probe["config"]["num_hidden_layers"]);
  EXPECT_EQ(distill["ranks"], 2);
  const json streamline = ReadJson(JobDir(id) + "/streamline/result.json");
  EXPECT_EQ(streamline["config"]["num_hidden_layers"].get<int>(),
            best_probe["config"]["num_hidden_layers"].get<int>() - 1);

  // The evaluation covers every model the job made; the export is the last one.
  const json eval = ReadJson(JobDir(id) + "/evaluate/result.json");
  std::vector<std::string> labels;
  for (const json& m : eval["models"]) labels.push_back(m["label"]);
  EXPECT_EQ(labels, (std::vector<std::string>{"teacher", "corrected teacher", "pruned", "distilled", "streamlined"}));
  EXPECT_TRUE(eval["sample"].contains("teacher") && eval["sample"].contains("student")) << eval["sample"].dump();
  const std::string exported = root_ + "/out/final";
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "README.md"}) {
    EXPECT_TRUE(fs::exists(exported + "/" + f)) << f;
  }
  EXPECT_NE(ReadFileToString(exported + "/README.md").value_or("").find("Topiary job " + id), std::string::npos);
  auto e = Topiary({"eval", "--model", exported, "--data", root_ + "/data/kjv-val.bin", "--seq-len", "64",
                    "--max-windows", "8", "--json"});
  ASSERT_EQ(e.exit_code, 0) << e.output;
  const json cli = json::parse(e.output.substr(e.output.find('{')));
  EXPECT_NEAR(cli["loss"].get<double>(), eval["loss"].get<double>(), 1e-5 * eval["loss"].get<double>());
}

TEST_F(WorkerTest, TwoRanksAcrossWorkersEqualOneProcess) {
  StartCoordinator();
  StartWorker("a", 1);
  StartWorker("b", 1);
  const std::string id = client_->Submit(
      Spec(std::string(kPrefix) +
           "  - distill: {tokens: 4096, lr: 1e-3, min_lr: 1e-4, warmup_steps: 2, global_batch: 8, micro_batch: 2, "
           "dtype: fp32}\n"));
  v1::Job job = client_->WaitFor(id, JobClient::Finished, 300);
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.DebugString();
  for (int s : {0, 2}) {  // importance and distill: one rank on each worker
    const v1::Task& t = job.stages(s).tasks(0);
    ASSERT_EQ(t.workers_size(), 2);
    EXPECT_NE(t.workers(0), t.workers(1)) << job.stages(s).name();
  }
  const std::string teacher = root_ + "/models/kjv-llama-8m";
  auto imp = Topiary({"importance", "--model", teacher, "--data", root_ + "/data/kjv-train.bin", "--seq-len", "64",
                      "--samples", "8", "--batch", "2", "--depth", "lm_loss", "--out", dir_ + "/cli-importance"});
  ASSERT_EQ(imp.exit_code, 0) << imp.output;
  const json a = ReadJson(JobDir(id) + "/importance/scores.json"), b = ReadJson(dir_ + "/cli-importance/scores.json");
  for (const char* kind : {"heads", "neurons", "channels"}) {
    const std::string x = a["width"][kind].dump(), y = b["width"][kind].dump();
    const json xa = a["width"][kind].flatten(), yb = b["width"][kind].flatten();
    ASSERT_EQ(xa.size(), yb.size()) << kind;
    for (auto it = xa.begin(); it != xa.end(); ++it) {
      const double u = it.value().get<double>(), v = yb[it.key()].get<double>();
      ASSERT_NEAR(u, v, 1e-4 * std::abs(v) + 1e-9) << kind << it.key();
    }
  }
  for (const char* metric : {"lm_loss", "block_influence"}) {
    for (size_t l = 0; l < a["depth"][metric].size(); ++l) {
      EXPECT_NEAR(a["depth"][metric][l].get<double>(), b["depth"][metric][l].get<double>(),
                  1e-4 * std::abs(b["depth"][metric][l].get<double>()) + 1e-9)
          << metric << l;
    }
  }
  auto kd = CliDistill(id, teacher, 8, {"--eval-windows", "8"});
  ASSERT_EQ(kd.exit_code, 0) << kd.output;
  const std::vector<double> job_losses = Losses(JobDir(id) + "/distill/train_log.jsonl");
  const std::vector<double> cli_losses = Losses(dir_ + "/cli-distill/train_log.jsonl");
  ASSERT_EQ(job_losses.size(), 8u);
  ASSERT_EQ(cli_losses.size(), 8u);
  for (size_t i = 0; i < job_losses.size(); ++i) EXPECT_NEAR(job_losses[i], cli_losses[i], 1e-4 * cli_losses[i]) << i;
  // AdamW hardly sees a gradient's scale (and clipping hides it): the norm of
  // the averaged gradient is what tells a mean over ranks from a sum.
  const std::vector<double> job_norms = LogField(JobDir(id) + "/distill/train_log.jsonl", "grad_norm");
  const std::vector<double> cli_norms = LogField(dir_ + "/cli-distill/train_log.jsonl", "grad_norm");
  ASSERT_EQ(job_norms.size(), cli_norms.size());
  for (size_t i = 0; i < job_norms.size(); ++i) EXPECT_NEAR(job_norms[i], cli_norms[i], 1e-3 * cli_norms[i]) << i;
}

// A worker killed (SIGKILL) or drained (SIGTERM) while it runs both ranks of
// a distillation: the task fails without counting, moves to the other
// worker and resumes from the newest checkpoint.
class WorkerLossTest : public WorkerTest, public ::testing::WithParamInterface<int> {};

TEST_P(WorkerLossTest, TheTaskResumesOnTheOtherWorkerFromItsCheckpoint) {
  const int sig = GetParam();
  StartCoordinator();
  std::map<std::string, pid_t> pids;
  pids["a"] = StartWorker("a", 2);
  pids["b"] = StartWorker("b", 2);
  const std::string distill =
      "  - distill: {tokens: 15360, lr: 1e-3, min_lr: 1e-4, warmup_steps: 2, global_batch: 8, micro_batch: 2, "
      "dtype: fp32, checkpoint_every: 4}\n";
  const std::string id = client_->Submit(Spec(std::string(kPrefix) + distill));
  v1::Job job = client_->WaitFor(id, JobClient::AtStep("distill", 9), 300);
  ASSERT_EQ(job.state(), v1::JOB_RUNNING) << job.DebugString();
  const std::string victim = NameOf(job.stages(2).tasks(0).workers(0), {"a", "b"});
  ASSERT_FALSE(victim.empty());
  EXPECT_EQ(job.stages(2).tasks(0).workers(1), job.stages(2).tasks(0).workers(0));  // both ranks on it
  const auto t0 = std::chrono::steady_clock::now();
  const int code = workers_->Stop(pids[victim], sig);
  if (sig == SIGTERM) {
    EXPECT_EQ(code, 0) << workers_->Log(victim);  // drained: ranks checkpointed and reported
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
  }
  for (int i = 0; i < 40 && ProcessesMentioning(dir_ + "/" + victim + "/") > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(ProcessesMentioning(dir_ + "/" + victim + "/"), 0) << "a rank outlived its worker";
  job = client_->WaitFor(id, [](const v1::Job& j) {
    return JobClient::Finished(j) ||
           (j.stages(2).tasks(0).attempt() == 2 && j.stages(2).tasks(0).state() == v1::TASK_RUNNING);
  });
  const double resume_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s: the task ran again %.1f s after the worker was stopped\n", sig == SIGKILL ? "SIGKILL" : "SIGTERM",
              resume_s);
  job = client_->WaitFor(id, JobClient::Finished, 300);
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.DebugString();
  const v1::Task& task = job.stages(2).tasks(0);
  EXPECT_EQ(task.attempt(), 2);
  EXPECT_EQ(task.task_failures(), 0);
  EXPECT_EQ(task.infra_failures(), 1);
  EXPECT_NE(NameOf(task.workers(0), {"a", "b"}), victim);
  const json result = ReadJson(JobDir(id) + "/distill/result.json");
  EXPECT_GT(result["resumed_from"].get<int>(), 0) << result.dump();  // not a restart from step 0
  if (sig == SIGTERM) {
    EXPECT_GE(result["resumed_from"].get<int>(), 9);  // the drain wrote a checkpoint
  }
  // It ends where an uninterrupted run ends (each step once in the log).
  auto kd = CliDistill(id, root_ + "/models/kjv-llama-8m", 30);
  ASSERT_EQ(kd.exit_code, 0) << kd.output;
  const std::vector<double> job_losses = Losses(JobDir(id) + "/distill/train_log.jsonl");
  const std::vector<double> cli_losses = Losses(dir_ + "/cli-distill/train_log.jsonl");
  ASSERT_EQ(job_losses.size(), 30u);
  ASSERT_EQ(cli_losses.size(), 30u);
  EXPECT_NEAR(job_losses.back(), cli_losses.back(), 1e-3 * cli_losses.back());
}

INSTANTIATE_TEST_SUITE_P(KillAndDrain, WorkerLossTest, ::testing::Values(SIGKILL, SIGTERM),
                         [](const auto& info) { return std::string(info.param == SIGKILL ? "Kill" : "Drain"); });

TEST_F(WorkerTest, TheCoordinatorKilledMidDistillationLosesNothing) {
  const std::string listen = "127.0.0.1:" + std::to_string(testing::FreePort());
  StartCoordinator({"--recovery-grace-seconds", "20"}, listen);
  StartWorker("a", 2);
  const std::string id = client_->Submit(
      Spec(std::string(kPrefix) + "  - distill: {tokens: 12K, lr: 1e-3, global_batch: 8, checkpoint_every: 4}\n"));
  v1::Job job = client_->WaitFor(id, JobClient::AtStep("distill", 3), 300);
  ASSERT_EQ(job.state(), v1::JOB_RUNNING);
  const std::vector<v1::Event> before = client_->Events(id);
  EXPECT_EQ(coordinator_->Kill(SIGKILL), -SIGKILL);
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the ranks go on meanwhile
  coordinator_->Start();
  job = client_->WaitFor(id, JobClient::Finished, 300);
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.DebugString() << workers_->Log("a");
  EXPECT_EQ(job.stages(2).tasks(0).attempt(), 1) << "the running ranks were not kept across the restart";
  const std::vector<v1::Event> after = client_->Events(id);
  ASSERT_GE(after.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_EQ(after[i].SerializeAsString(), before[i].SerializeAsString()) << "event " << i + 1;
  }
  for (size_t i = 0; i < after.size(); ++i) EXPECT_EQ(after[i].seq(), static_cast<int64_t>(i + 1));
}

TEST_F(WorkerTest, CancelStopsEveryRankAndKeepsTheCheckpoint) {
  StartCoordinator();
  StartWorker("a", 2);
  const std::string id = client_->Submit(
      Spec(std::string(kPrefix) + "  - distill: {tokens: 1M, lr: 1e-3, global_batch: 8, checkpoint_every: 3}\n"));
  v1::Job job = client_->WaitFor(id, JobClient::AtStep("distill", 5), 300);
  ASSERT_EQ(job.state(), v1::JOB_RUNNING);
  v1::Job out;
  ASSERT_TRUE(client_->Cancel(id, &out).ok());
  const auto t0 = std::chrono::steady_clock::now();
  job = client_->WaitFor(id, JobClient::Finished, 60);
  const double stop_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(job.state(), v1::JOB_CANCELLED);
  EXPECT_LT(stop_s, 3.0) << "every rank should stop within a heartbeat interval (1 s) and a step";
  bool checkpoint = false;
  for (const auto& e : fs::directory_iterator(JobDir(id) + "/.work/distill/checkpoints")) {
    checkpoint = checkpoint || e.path().filename().string().rfind("step-", 0) == 0;
  }
  EXPECT_TRUE(checkpoint);
  for (int i = 0; i < 40 && ProcessesMentioning(dir_ + "/a/") > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(ProcessesMentioning(dir_ + "/a/"), 0);
}

TEST_F(WorkerTest, ACorruptTeacherFailsItsJobWithTheLoadersReason) {
  StartCoordinator();
  StartWorker("a", 1);
  fs::copy(root_ + "/models/kjv-llama-8m", root_ + "/models/corrupt", fs::copy_options::recursive);
  fs::resize_file(root_ + "/models/corrupt/model.safetensors", 1000);
  const std::string bad = client_->Submit(Spec("  - importance: {depth: [lm_loss]}\n", 1, 0, "corrupt"));
  v1::Job job = client_->WaitFor(bad, JobClient::Finished, 120);
  ASSERT_EQ(job.state(), v1::JOB_FAILED);
  EXPECT_NE(job.error().find("model.safetensors"), std::string::npos) << job.error();
  const std::string good = client_->Submit(Spec("  - importance: {depth: [lm_loss]}\n", 1));
  EXPECT_EQ(client_->WaitFor(good, JobClient::Finished, 120).state(), v1::JOB_SUCCEEDED);
}

TEST_F(WorkerTest, ARankThatAbortsFailsItsAttemptAndTheWorkerKeepsServing) {
  StartCoordinator();
  // The first rank this worker starts aborts; later ones run the real program.
  const std::string wrapper = dir_ + "/aborting-rank";
  std::ofstream(wrapper) << "#!/bin/sh\nif [ ! -e " << dir_ << "/aborted ]; then touch " << dir_
                         << "/aborted; kill -ABRT $$; fi\nexec " << testing::BinDir() << "/topiary-rank \"$@\"\n";
  chmod(wrapper.c_str(), 0755);
  const pid_t worker = StartWorker("a", 1, {"--rank-binary", wrapper});
  const std::string id = client_->Submit(Spec("  - importance: {depth: [lm_loss]}\n", 1, /*max_retries=*/1));
  v1::Job job = client_->WaitFor(id, JobClient::Finished, 120);
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.DebugString();
  EXPECT_EQ(job.stages(0).tasks(0).attempt(), 2);
  EXPECT_EQ(job.stages(0).tasks(0).task_failures(), 1);
  bool reported = false;
  for (const v1::Event& e : client_->Events(id))
    reported = reported || e.message().find("signal 6") != std::string::npos;
  EXPECT_TRUE(reported);
  EXPECT_EQ(kill(worker, 0), 0) << "the worker died with its rank";
}

// The coordinator checked the teacher's path at submit time; a symlink that
// appears afterwards and points out of the storage root is refused by the
// worker when it opens the path.
TEST_F(WorkerTest, WorkersRecheckPathsWhenTheyOpenThem) {
  StartCoordinator();
  fs::copy(root_ + "/models/kjv-llama-8m", root_ + "/models/moved", fs::copy_options::recursive);
  const std::string id = client_->Submit(Spec("  - importance: {depth: [lm_loss]}\n", 1, 0, "moved"));
  ASSERT_FALSE(id.empty());
  fs::rename(root_ + "/models/moved", dir_ + "/outside");                    // out of the root ...
  fs::create_directory_symlink(dir_ + "/outside", root_ + "/models/moved");  // ... and linked back in
  StartWorker("a", 1);
  v1::Job job = client_->WaitFor(id, JobClient::Finished, 120);
  ASSERT_EQ(job.state(), v1::JOB_FAILED);
  EXPECT_NE(job.error().find("outside the storage roots"), std::string::npos) << job.error();
}

TEST_F(WorkerTest, AStageThatCannotFitIsRefusedWithItsEstimate) {
  StartCoordinator();
  StartWorker("small", 1, {"--memory", "20MB"});
  const std::string id = client_->Submit(Spec("  - importance: {depth: [lm_loss]}\n", 1));
  v1::Job job = client_->WaitFor(id, JobClient::Finished, 120);
  ASSERT_EQ(job.state(), v1::JOB_FAILED);
  EXPECT_NE(job.error().find("importance needs an estimated"), std::string::npos) << job.error();
  EXPECT_NE(job.error().find("available to this rank"), std::string::npos) << job.error();
}

}  // namespace
}  // namespace topiary
