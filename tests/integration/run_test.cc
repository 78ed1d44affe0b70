// `topiary run` end to end, as a user runs it: the examples (the README's main
// one included) at a tiny budget through a real coordinator and workers
// started by the command, the job report it leaves, Ctrl-C, --resume after
// the run itself was killed, --dry-run, and two runs at once.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/file_util.h"
#include "common/report/job_report.h"
#include "common/spec/spec_io.h"
#include "testing/processes.h"
#include "topiary/v1/job_service.grpc.pb.h"

namespace topiary {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}

json ReadJson(const std::string& path) {
  auto text = ReadFileToString(path, 1 << 26);
  return text.ok() ? json::parse(*text, nullptr, false) : json();
}

// Processes whose command line mentions `needle`.
int ProcessesMentioning(const std::string& needle) {
  int n = 0;
  DIR* d = opendir("/proc");
  while (dirent* e = d ? readdir(d) : nullptr) {
    if (!std::isdigit(static_cast<unsigned char>(e->d_name[0])) || std::atoi(e->d_name) == getpid()) continue;
    auto cmd = ReadFileToString(absl::StrCat("/proc/", e->d_name, "/cmdline"), 1 << 16);
    if (!cmd.ok() || cmd->empty()) continue;
    std::string s = *cmd;
    std::replace(s.begin(), s.end(), '\0', ' ');
    if (s.find(needle) != std::string::npos) ++n;
  }
  if (d) closedir(d);
  return n;
}

// The examples at a tiny budget: same stages and options, a few steps each.
v1::JobSpec Shrink(v1::JobSpec s, int64_t distill_tokens = 1024) {
  v1::DataSpec* d = s.mutable_data();
  if (!d->calibration().path().empty())
    d->mutable_calibration()->set_samples(8), d->mutable_calibration()->set_seq_len(64);
  if (!d->train().path().empty()) d->mutable_train()->set_seq_len(64);
  if (!d->eval().path().empty()) d->mutable_eval()->set_samples(4), d->mutable_eval()->set_seq_len(64);
  auto recipe = [&](auto* r, int64_t tokens) {
    r->set_tokens(absl::StrCat(tokens));
    r->set_global_batch(4);
    r->clear_micro_batch();
    r->set_checkpoint_every(2);
    r->set_warmup_steps(1);
    r->clear_eval_every();
    r->clear_seq_len();
  };
  for (v1::StageSpec& st : *s.mutable_stages()) {
    if (st.has_importance()) st.mutable_importance()->set_batch(4);
    if (st.has_teacher_correction()) recipe(st.mutable_teacher_correction(), 512);
    if (st.has_distill()) recipe(st.mutable_distill(), distill_tokens);
    if (st.has_streamline()) recipe(st.mutable_streamline(), 512);
    if (st.has_prune() && st.prune().has_search()) {
      v1::SearchSpec* search = st.mutable_prune()->mutable_search();
      search->set_candidates(2);
      search->set_eval_windows(2);
      if (!search->probe_tokens().empty()) search->set_probe_tokens("512");
    }
    if (st.has_evaluate()) st.mutable_evaluate()->set_max_windows(4), st.mutable_evaluate()->set_max_examples(8);
  }
  return s;
}

class RunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = *MakeTempDir("topiary-run-test");
    fs::create_directories(dir_ + "/models");
    fs::create_directories(dir_ + "/build/kjv");
    fs::create_directories(dir_ + "/examples");
    fs::copy(Env("TOPIARY_SOURCE_DIR", ".") + "/models/kjv-llama-8m", dir_ + "/models/kjv-llama-8m",
             fs::copy_options::recursive);
    for (const char* f : {"kjv-train.bin", "kjv-val.bin", "kjv-tasks.jsonl"}) {
      fs::copy(Env("TOPIARY_KJV_DIR", "build/kjv") + "/" + f, dir_ + "/build/kjv/" + f);
    }
  }
  void TearDown() override {
    for (pid_t p : pids_) kill(p, SIGKILL), waitpid(p, nullptr, 0);
    if (!getenv("KEEP")) RemoveAll(dir_).IgnoreError();
  }
  // examples/<name>.yaml shrunk, written next to the copies; its path.
  std::string Example(const std::string& name, int64_t distill_tokens = 1024) {
    auto text = ReadFileToString(Env("TOPIARY_SOURCE_DIR", ".") + "/examples/" + name + ".yaml", 1 << 20);
    EXPECT_TRUE(text.ok());
    auto spec = spec::ParseJobSpec(*text);
    EXPECT_TRUE(spec.ok()) << spec.status();
    const std::string path = dir_ + "/examples/" + name + ".json";
    std::ofstream(path) << spec::JobSpecToJson(Shrink(*spec, distill_tokens));
    return path;
  }
  std::vector<std::string> RunArgs(const std::string& spec, std::vector<std::string> extra = {}) {
    std::vector<std::string> a = {testing::BinDir() + "/topiary", "run", spec, "--storage", dir_};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  testing::ProcessResult Topiary(std::vector<std::string> args, int seconds = 600) {
    args.insert(args.begin(), testing::BinDir() + "/topiary");
    return testing::RunProcesses({args}, dir_, std::chrono::seconds(seconds))[0];
  }
  std::string JobOf(const std::string& state) const {
    return std::string(absl::StripAsciiWhitespace(ReadFileToString(state + "/job", 256).value_or("")));
  }
  // The distill stage of a running job reached `step` (read from the run's coordinator).
  bool DistillAt(const std::string& state, int step) {
    auto r = Topiary({"get", JobOf(state), "--state-dir", state, "-o", "json"}, 30);
    json j = json::parse(r.output.substr(std::min(r.output.find('{'), r.output.size())), nullptr, false);
    if (!j.is_object() || !j.contains("stages")) return false;
    for (const json& s : j["stages"]) {
      if (s.value("name", "") != "distill" || !s.contains("tasks")) continue;
      const json& p = s["tasks"][0].value("progress", json::object());
      if (p.value("phase", "") == "training" && std::stoll(p.value("step", std::string("0"))) >= step) return true;
    }
    return false;
  }
  pid_t Spawn(const std::vector<std::string>& args, const std::string& log) {
    pid_t p = testing::SpawnProcess(args, log);
    pids_.push_back(p);
    return p;
  }
  int Wait(pid_t p, int seconds) {
    for (int i = 0; i < seconds * 20; ++i) {
      int status = 0;
      if (waitpid(p, &status, WNOHANG) == p) {
        pids_.erase(std::remove(pids_.begin(), pids_.end(), p), pids_.end());
        return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1000;
  }
  void WaitUntil(const std::function<bool()>& pred, int seconds, const std::string& what) {
    for (int i = 0; i < seconds * 10 && !pred(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(pred()) << "timed out waiting for " << what;
  }

  std::string dir_;
  std::vector<pid_t> pids_;
};

TEST_F(RunTest, TheMainExampleRunsAndLeavesACompleteReport) {
  const auto t0 = std::chrono::steady_clock::now();
  auto r = testing::RunProcesses({RunArgs(Example("kjv-minitron"))}, dir_, std::chrono::seconds(600))[0];
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::printf("topiary run of the main example at a tiny budget: %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  const std::string id = JobOf(dir_ + "/.topiary");
  ASSERT_FALSE(id.empty());
  const std::string job_dir = dir_ + "/jobs/" + id;
  EXPECT_NE(r.output.find(job_dir + "/report.html"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("result: " + dir_ + "/out/kjv-minitron-57pct"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(dir_ + "/out/kjv-minitron-57pct/model.safetensors"));
  // The export is a plain Hugging Face checkpoint: transformers loads it and
  // gives the loss `topiary eval` gives (tests/parity).
  auto parity = testing::RunProcesses(
      {{Env("TOPIARY_PYTHON", TOPIARY_TEST_PYTHON), Env("TOPIARY_SOURCE_DIR", ".") + "/tests/parity/parity_test.py",
        "--bin", testing::BinDir(), "--model", dir_ + "/out/kjv-minitron-57pct"}},
      dir_, std::chrono::seconds(300))[0];
  EXPECT_EQ(parity.exit_code, 0) << parity.output;
  const json rep = ReadJson(job_dir + "/report.json");
  ASSERT_TRUE(rep.is_object()) << job_dir;
  EXPECT_EQ(rep["job"]["state"], "JOB_SUCCEEDED");
  for (const json& s : rep["stages"]) EXPECT_EQ(s["state"], "STAGE_SUCCEEDED") << s.dump();
  EXPECT_TRUE(rep["teacher"].contains("params") && rep["result"].contains("params")) << rep.dump();
  EXPECT_TRUE(rep["importance"]["depth"].contains("lm_loss"));
  EXPECT_FALSE(rep["importance"]["width"]["neurons"].empty());
  ASSERT_FALSE(rep["search"]["candidates"].empty());
  int winners = 0;
  for (const json& c : rep["search"]["candidates"]) winners += c["winner"].get<bool>();
  EXPECT_EQ(winners, 1);
  ASSERT_EQ(rep["training"].size(), 1u);
  std::vector<std::string> labels;
  for (const json& m : rep["evaluation"]["models"]) labels.push_back(m["label"]);
  EXPECT_EQ(labels, (std::vector<std::string>{"teacher", "pruned", "distilled"}));
  EXPECT_TRUE(rep["sample"].contains("student"));
  const std::string md = ReadFileToString(job_dir + "/report.md").value_or("");
  const std::string html = ReadFileToString(job_dir + "/report.html").value_or("");
  for (const json& m : rep["evaluation"]["models"]) {
    const std::string ppl = report::FormatPerplexity(m["perplexity"].get<double>());
    EXPECT_NE(md.find(ppl), std::string::npos) << ppl;
    EXPECT_NE(html.find(ppl), std::string::npos) << ppl;
  }
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("href="), std::string::npos);
  // Afterwards, without a server: the API commands over the state directory.
  auto get = Topiary({"get", id, "--state-dir", dir_ + "/.topiary"});
  EXPECT_EQ(get.exit_code, 0) << get.output;
  EXPECT_NE(get.output.find("SUCCEEDED"), std::string::npos) << get.output;
  auto summary = Topiary({"report", id, "--state-dir", dir_ + "/.topiary"});
  EXPECT_EQ(summary.exit_code, 0) << summary.output;
  EXPECT_NE(summary.output.find("perplexity"), std::string::npos) << summary.output;
  EXPECT_EQ(ProcessesMentioning(dir_ + "/.topiary"), 0);
}

class ExampleTest : public RunTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(ExampleTest, RunsAtATinyBudget) {
  auto r = testing::RunProcesses({RunArgs(Example(GetParam()))}, dir_, std::chrono::seconds(600))[0];
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json rep = ReadJson(dir_ + "/jobs/" + JobOf(dir_ + "/.topiary") + "/report.json");
  EXPECT_EQ(rep["job"]["state"], "JOB_SUCCEEDED") << rep.dump();
}

INSTANTIATE_TEST_SUITE_P(Examples, ExampleTest,
                         ::testing::Values("width-distill", "depth-block-influence", "depth-contiguous",
                                           "search-probes", "teacher-correction", "lora-recovery", "streamline"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST_F(RunTest, CtrlCCancelsTheJobAndLeavesNoProcess) {
  const std::string state = dir_ + "/.topiary";
  const pid_t run = Spawn(RunArgs(Example("kjv-minitron", 400000), {"--drain-seconds", "10"}), dir_ + "/run.log");
  WaitUntil([&] { return !JobOf(state).empty() && DistillAt(state, 2); }, 300, "distillation to start");
  kill(run, SIGINT);
  EXPECT_EQ(Wait(run, 60), 6) << ReadFileToString(dir_ + "/run.log").value_or("");
  EXPECT_EQ(ProcessesMentioning(state), 0) << "a process the run started is still there";
  auto get = Topiary({"get", JobOf(state), "--state-dir", state});
  EXPECT_NE(get.output.find("CANCELLED"), std::string::npos) << get.output;
  EXPECT_TRUE(fs::exists(dir_ + "/jobs/" + JobOf(state) + "/.work/distill/checkpoints"));
}

TEST_F(RunTest, ResumeFinishesTheJobOfAKilledRun) {
  const std::string state = dir_ + "/.topiary";
  const std::string spec = Example("kjv-minitron", 16384);
  const pid_t run = Spawn(RunArgs(spec, {"--drain-seconds", "5"}), dir_ + "/run.log");
  WaitUntil([&] { return !JobOf(state).empty() && DistillAt(state, 5); }, 300, "distillation step 5");
  kill(run, SIGKILL);
  Wait(run, 10);
  WaitUntil([&] { return ProcessesMentioning(state) == 0; }, 30, "the run's children to die with it");
  auto r = Topiary({"run", "--resume", "--storage", dir_}, 600);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json distill = ReadJson(dir_ + "/jobs/" + JobOf(state) + "/distill/result.json");
  EXPECT_GT(distill["resumed_from"].get<int>(), 0) << distill.dump();
  EXPECT_EQ(distill["steps"].get<int>(), 64);
}

TEST_F(RunTest, DryRunPrintsThePlanOrNamesTheBadField) {
  auto plan = Topiary({"run", Example("kjv-minitron"), "--storage", dir_, "--dry-run"});
  ASSERT_EQ(plan.exit_code, 0) << plan.output;
  for (const char* want :
       {"importance (2 rank(s))", "probe 0:", "memory per rank", "distill (2 rank(s))", "estimated total"}) {
    EXPECT_NE(plan.output.find(want), std::string::npos) << want << "\n" << plan.output;
  }
  EXPECT_FALSE(fs::exists(dir_ + "/.topiary"));  // nothing started
  std::ofstream(dir_ + "/bad.yaml") << "name: bad\nteacher: {path: models/kjv-llama-8m}\n"
                                    << "data: {eval: {path: build/kjv/kjv-val.bin}}\n"
                                    << "stages:\n  - evaluate: {max_windows: -3}\n";
  auto bad = Topiary({"run", dir_ + "/bad.yaml", "--storage", dir_, "--dry-run"});
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("spec.stages[0].evaluate.max_windows"), std::string::npos) << bad.output;
}

// --time-budget: from steps measured now, the token budgets shrink by one
// factor until the estimate fits; shapes stay; bad budgets name the flag.
TEST_F(RunTest, TimeBudgetScalesTokenBudgetsAndKeepsShapes) {
  const std::string spec = Example("kjv-minitron", 2000000);
  auto full = Topiary({"run", spec, "--storage", dir_, "--dry-run"});
  ASSERT_EQ(full.exit_code, 0) << full.output;
  // A budget between the part no token budget sets and the whole.
  auto seconds_after = [](const std::string& out, const std::string& what) {
    const size_t at = out.find(what);
    return at == std::string::npos ? -1.0 : std::atof(out.c_str() + at + what.size());
  };
  const double scalable = seconds_after(full.output, "of which token budgets set: ");
  const double rest = seconds_after(full.output, "; the rest: ");
  ASSERT_GT(scalable, 4 * rest) << full.output;
  const double budget = 2 * rest + scalable / 4;
  auto fitted = Topiary({"run", spec, "--storage", dir_, "--dry-run", "--time-budget", absl::StrCat(budget, "s")});
  ASSERT_EQ(fitted.exit_code, 0) << fitted.output;
  EXPECT_NE(fitted.output.find("token budgets x"), std::string::npos) << fitted.output;
  EXPECT_NE(fitted.output.find("stages[2].distill.tokens: 2000000 -> "), std::string::npos) << fitted.output;
  // The same probes (shapes) in both plans.
  auto probes = [](const std::string& out) {
    std::string s;
    for (size_t at = out.find("probe "); at != std::string::npos; at = out.find("probe ", at + 1)) {
      s += out.substr(at, out.find('\n', at) - at) + "\n";
    }
    return s;
  };
  EXPECT_EQ(probes(full.output), probes(fitted.output));
  // Re-measured in another process: within 2x of the budget despite noise.
  const double fitted_total =
      seconds_after(fitted.output, "of which token budgets set: ") + seconds_after(fitted.output, "; the rest: ");
  EXPECT_LE(fitted_total, 2 * budget) << fitted.output;
  auto roomy = Topiary({"run", spec, "--storage", dir_, "--dry-run", "--time-budget", "10h"});
  ASSERT_EQ(roomy.exit_code, 0) << roomy.output;
  EXPECT_NE(roomy.output.find("fits; nothing scaled"), std::string::npos) << roomy.output;
  for (const char* bad : {"soon", "-5m", "1ms"}) {
    auto r = Topiary({"run", spec, "--storage", dir_, "--dry-run", "--time-budget", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.output;
    EXPECT_NE(r.output.find("--time-budget"), std::string::npos) << bad << ": " << r.output;
  }
}

TEST_F(RunTest, TwoRunsInDifferentStateDirectoriesAtOnce) {
  const std::string spec = Example("depth-block-influence");
  auto both = testing::RunProcesses(
      {RunArgs(spec, {"--state-dir", dir_ + "/state-a"}), RunArgs(spec, {"--state-dir", dir_ + "/state-b"})}, dir_,
      std::chrono::seconds(600));
  ASSERT_EQ(both[0].exit_code, 0) << both[0].output;
  ASSERT_EQ(both[1].exit_code, 0) << both[1].output;
  const std::string a = JobOf(dir_ + "/state-a"), b = JobOf(dir_ + "/state-b");
  EXPECT_NE(a, b);
  for (const std::string& id : {a, b}) {
    EXPECT_EQ(ReadJson(dir_ + "/jobs/" + id + "/report.json")["job"]["state"], "JOB_SUCCEEDED") << id;
  }
}

}  // namespace
}  // namespace topiary
