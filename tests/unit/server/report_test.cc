// The job report from a job record and the files its stages wrote: what it
// contains, that the Markdown and HTML renderings show the JSON's numbers,
// that the HTML fetches nothing, and that a failed job's report says which
// stage failed and why.
#include "common/report/job_report.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "common/file_util.h"

namespace topiary::report {
namespace {

using json = nlohmann::json;

class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = *MakeTempDir("topiary-report");
    std::filesystem::create_directories(root_ + "/teacher");
    std::ofstream(root_ + "/teacher/config.json")
        << R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 256, "intermediate_size": 768,
               "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 32, "num_hidden_layers": 2,
               "vocab_size": 100, "torch_dtype": "bfloat16"})";
    std::ofstream(root_ + "/teacher/model.safetensors") << std::string(1000, 'x');
    job_dir_ = root_ + "/jobs/job-1";
    std::filesystem::create_directories(job_dir_ + "/importance");
    std::ofstream(job_dir_ + "/importance/scores.json")
        << R"({"version": 1, "width": {"heads": [[1, 3], [2, 4]], "neurons": [[1, 1], [5, 7]]},
               "depth": {"block_influence": [0.25, 0.75], "lm_loss": [3.5, 4.5],
                         "angular_distance_windows": {"1": [0.1, 0.2]}}})";
    std::filesystem::create_directories(job_dir_ + "/distill");
    std::ofstream(job_dir_ + "/distill/train_log.jsonl")
        << "{\"step\": 1, \"loss\": 2.5, \"tokens\": 100}\n{\"step\": 2, \"loss\": 1.25, \"eval_loss\": 1.75, "
           "\"tokens\": 200, \"tokens_per_second\": 1000}\n";
    job_.set_id("job-1");
    job_.set_owner("alice");
    job_.set_state(v1::JOB_SUCCEEDED);
    job_.set_create_time_micros(1'000'000);
    job_.set_update_time_micros(61'000'000);
    job_.mutable_spec()->set_name("report-test");
    job_.mutable_spec()->mutable_teacher()->set_path(root_ + "/teacher");
    job_.mutable_spec()->add_stages()->mutable_importance();
    job_.mutable_spec()->add_stages()->mutable_prune()->mutable_search()->set_params("0.5");
    job_.mutable_spec()->add_stages()->mutable_distill()->set_tokens("1K");
    job_.mutable_spec()->add_stages()->mutable_evaluate();
    AddStage("importance", v1::STAGE_SUCCEEDED, 0, 2'000'000, "{}");
    v1::Stage* search =
        AddStage("search", v1::STAGE_SUCCEEDED, 2'000'000, 12'000'000, R"({"best_task": 1, "best_loss": 3.25})");
    search->add_tasks()->set_result_json(R"({"index": 0, "loss": 3.5, "zero_shot_loss": 4.5, "params": 1000,
                                             "config": {"hidden_size": 224}})");
    search->add_tasks()->set_result_json(R"({"index": 1, "loss": 3.25, "zero_shot_loss": 4.75, "params": 900,
                                             "distilled_loss": 3.25, "config": {"hidden_size": 192}})");
    AddStage("distill", v1::STAGE_SUCCEEDED, 12'000'000, 50'000'000,
             R"({"config": {"hidden_size": 192, "params": 900}, "model": "/x/distill/model", "steps": 2})");
    AddStage("evaluate", v1::STAGE_SUCCEEDED, 50'000'000, 60'000'000,
             R"({"models": [{"label": "teacher", "params": 1000, "perplexity": 50.8123, "loss": 3.9281,
                             "kl_to_teacher": 0, "top1_agreement": 1},
                            {"label": "distilled", "params": 900, "perplexity": 61.2345, "loss": 4.1147,
                             "kl_to_teacher": 0.1234, "top1_agreement": 0.8,
                             "tasks": [{"file": "t.jsonl", "acc": 0.375, "acc_norm": 0.4, "examples": 8}]}],
                 "sample": {"prompt": "In the beginning", "teacher": " God created", "student": " <was> & so"}})");
  }
  void TearDown() override { RemoveAll(root_).IgnoreError(); }
  v1::Stage* AddStage(const std::string& name, v1::StageState state, int64_t start, int64_t end,
                      const std::string& result) {
    v1::Stage* s = job_.add_stages();
    s->set_name(name);
    s->set_state(state);
    s->set_start_time_micros(start);
    s->set_end_time_micros(end);
    s->set_result_json(result);
    return s;
  }
  std::string root_, job_dir_;
  v1::Job job_;
};

TEST_F(ReportTest, HoldsWhatTheJobDid) {
  const json r = BuildReport(job_, job_dir_);
  EXPECT_EQ(r["version"], 1);
  EXPECT_EQ(r["job"]["state"], "JOB_SUCCEEDED");
  EXPECT_DOUBLE_EQ(r["job"]["seconds"].get<double>(), 60.0);
  EXPECT_EQ(r["teacher"]["config"]["hidden_size"], 256);
  EXPECT_EQ(r["teacher"]["bytes"],
            1000 + static_cast<int64_t>(std::filesystem::file_size(root_ + "/teacher/config.json")));
  EXPECT_GT(r["teacher"]["params"].get<int64_t>(), 0);
  EXPECT_EQ(r["result"]["config"]["hidden_size"], 192);
  ASSERT_EQ(r["stages"].size(), 4u);
  EXPECT_DOUBLE_EQ(r["stages"][1]["seconds"].get<double>(), 10.0);
  EXPECT_EQ(r["importance"]["depth"]["block_influence"], json({0.25, 0.75}));
  EXPECT_FALSE(r["importance"]["depth"].contains("angular_distance_windows"));
  EXPECT_EQ(r["importance"]["width"]["heads"], json({2.0, 3.0}));  // per-layer means
  ASSERT_EQ(r["search"]["candidates"].size(), 2u);
  EXPECT_EQ(r["search"]["best"], 1);
  EXPECT_TRUE(r["search"]["candidates"][1]["winner"].get<bool>());
  ASSERT_EQ(r["training"].size(), 1u);
  EXPECT_EQ(r["training"][0]["loss"], json({2.5, 1.25}));
  EXPECT_EQ(r["training"][0]["eval_loss"], json({1.75}));
  EXPECT_EQ(r["evaluation"]["models"].size(), 2u);
  EXPECT_EQ(r["sample"]["teacher"], " God created");
  EXPECT_FALSE(r.contains("failed_stage"));
}

TEST_F(ReportTest, RenderingsShowTheJsonsNumbers) {
  const json r = BuildReport(job_, job_dir_);
  const std::string md = RenderMarkdown(r), html = RenderHtml(r);
  std::vector<std::string> numbers;
  for (const json& m : r["evaluation"]["models"]) {
    numbers.push_back(FormatPerplexity(m["perplexity"]));
    numbers.push_back(FormatLoss(m["kl_to_teacher"]));
    numbers.push_back(FormatParams(m["params"]));
  }
  for (const json& c : r["search"]["candidates"]) numbers.push_back(FormatLoss(c["loss"]));
  for (const json& s : r["stages"]) numbers.push_back(FormatSeconds(s["seconds"]));
  numbers.push_back(FormatLoss(r["training"][0]["loss"].back()));
  numbers.push_back("0.375");
  for (const std::string& n : numbers) {
    EXPECT_NE(md.find(n), std::string::npos) << n << " is not in report.md";
    EXPECT_NE(html.find(n), std::string::npos) << n << " is not in report.html";
  }
  EXPECT_NE(html.find("&lt;was&gt; &amp; so"), std::string::npos);  // escaped, not markup
}

TEST_F(ReportTest, TheHtmlReferencesNothingOutsideItself) {
  const std::string html = RenderHtml(BuildReport(job_, job_dir_));
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("<polyline"), std::string::npos);
  for (const char* outside : {"src=", "href=", "url(", "@import", "<link", "<script", "http://", "https://"}) {
    EXPECT_EQ(html.find(outside), std::string::npos) << outside;
  }
}

TEST_F(ReportTest, AFailedJobSaysWhichStageFailedAndWhy) {
  job_.set_state(v1::JOB_FAILED);
  job_.set_error("stage distill failed after 2 attempt(s): loss is nan at step 3");
  v1::Stage* distill = job_.mutable_stages(2);
  distill->set_state(v1::STAGE_FAILED);
  distill->clear_result_json();
  v1::Task* t = distill->add_tasks();
  t->set_attempt(2);
  t->set_error("loss is nan at step 3");
  job_.mutable_stages(3)->set_state(v1::STAGE_CANCELLED);
  job_.mutable_stages(3)->clear_result_json();
  const json r = BuildReport(job_, job_dir_);
  ASSERT_TRUE(r.contains("failed_stage"));
  EXPECT_EQ(r["failed_stage"]["name"], "distill");
  EXPECT_EQ(r["failed_stage"]["error"], "loss is nan at step 3");
  EXPECT_EQ(r["stages"][2]["attempts"], 2);
  EXPECT_NE(RenderMarkdown(r).find("Stage `distill` failed: loss is nan at step 3"), std::string::npos);
  EXPECT_NE(RenderHtml(r).find("distill"), std::string::npos);
  EXPECT_NE(RenderSummary(r, "").find("stage distill failed: loss is nan at step 3"), std::string::npos);
}

}  // namespace
}  // namespace topiary::report
