#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/file_util.h"
#include "common/spec/spec_io.h"
#include "common/spec/validate.h"

namespace topiary::spec {
namespace {

class SpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = *MakeTempDir("topiary-spec");
    std::filesystem::create_directories(root_ + "/models/t");
    std::filesystem::create_directories(root_ + "/data");
  }
  void TearDown() override { RemoveAll(root_).IgnoreError(); }
  std::string Spec(const std::string& stages_extra = "") const {
    return "name: test\n"
           "teacher: {path: " +
           root_ +
           "/models/t}\n"
           "data:\n"
           "  calibration: {path: " +
           root_ +
           "/data/c.bin, format: u16, samples: 64, seq_len: 256}\n"
           "  train: {path: " +
           root_ +
           "/data/t.bin, format: u16, seq_len: 256}\n"
           "  eval: {path: " +
           root_ +
           "/data/v.bin, format: u16, seq_len: 256}\n"
           "stages:\n"
           "  - importance: {depth: [block_influence, lm_loss]}\n"
           "  - prune: {target: {hidden_size: 192, intermediate_size: 512}}\n"
           "  - distill: {tokens: 100M, lr: 1e-4, min_lr: 1e-5, global_batch: 16, micro_batch: 4}\n" +
           stages_extra + "resources: {ranks: 2}\npriority: 5\nlabels: {team: nlp}\n";
  }
  absl::Status Validate(const std::string& yaml) {
    auto s = ParseJobSpec(yaml);
    if (!s.ok()) return s.status();
    return ValidateJobSpec(*s, {root_});
  }
  std::string root_;
};

TEST_F(SpecTest, ParsesTheDesignExampleShape) {
  auto s = ParseJobSpec(Spec("  - export: {path: " + root_ + "/out, dtype: bfloat16}\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name(), "test");
  ASSERT_EQ(s->stages_size(), 4);
  EXPECT_EQ(s->stages(1).prune().target().hidden_size(), 192);
  EXPECT_EQ(s->stages(2).distill().tokens(), "100M");  // a string field stays a string
  EXPECT_DOUBLE_EQ(s->stages(2).distill().lr(), 1e-4);
  EXPECT_EQ(s->stages(0).importance().depth(1), "lm_loss");
  EXPECT_EQ(s->resources().ranks(), 2);
  EXPECT_EQ(s->labels().at("team"), "nlp");
  EXPECT_TRUE(ValidateJobSpec(*s, {root_}).ok()) << ValidateJobSpec(*s, {root_});
  // JSON is YAML: the printed spec parses back to the same message.
  auto again = ParseJobSpec(JobSpecToJson(*s));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->SerializeAsString(), s->SerializeAsString());
}

TEST_F(SpecTest, ParseErrorsNameThePath) {
  auto bad = ParseJobSpec("name: x\nstages:\n  - prune: {target: {hiden_size: 3}}\n");
  EXPECT_EQ(bad.status().message(), "spec.stages[0].prune.target.hiden_size: unknown field");
  EXPECT_NE(ParseJobSpec("name: [1, 2]").status().message().find("spec.name"), std::string::npos);
  EXPECT_NE(ParseJobSpec("name: x\nstages: {a: 1}").status().message().find("spec.stages: expected a list"),
            std::string::npos);
  EXPECT_EQ(ParseJobSpec("name: x\nstages: [1, 2").status().message(), "spec: line 2: end of sequence flow not found");
  EXPECT_NE(ParseJobSpec("priority: high\n").status().message().find("priority"), std::string::npos);
}

// Found by tests/fuzz/spec_fuzz: bytes that are not UTF-8 threw from the JSON
// rendering and took the process down.
TEST_F(SpecTest, TextThatIsNotUtf8IsRefusedNotACrash) {
  EXPECT_EQ(ParseJobSpec("name: \xff\xfe\n").status().message(), "spec: not valid UTF-8 (byte 6)");
  EXPECT_EQ(ParseJobSpec("name: \"\\ud800\"\n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJobSpec("name: \xc3\xa9t\xc3\xa9\n").status().code(), absl::StatusCode::kOk);  // "été"
  EXPECT_EQ(ParseJobSpec(std::string(70, '[')).status().message(), "spec: nested deeper than 64 levels");
  std::string aliases = "stages: [&e {evaluate: {perplexity: true}}";  // 600 KB naming 150,000 stages
  for (int i = 0; i < 150000; ++i) aliases += ", *e";
  aliases += "]\n";
  EXPECT_NE(ParseJobSpec(aliases).status().message().find("values"), std::string::npos);
}

TEST_F(SpecTest, ValidationNamesTheField) {
  auto msg = [&](const std::string& from, const std::string& to) {
    std::string y = Spec();
    y.replace(y.find(from), from.size(), to);
    return std::string(Validate(y).message());
  };
  EXPECT_EQ(msg("hidden_size: 192", "hidden_size: -1"), "spec.stages[1].prune.target.hidden_size: must be positive");
  EXPECT_EQ(msg("tokens: 100M", "tokens: lots").rfind("spec.stages[2].distill.tokens", 0), 0u);
  EXPECT_EQ(msg("global_batch: 16", "global_batch: 10"),
            "spec.stages[2].distill.global_batch: must be a multiple of micro_batch");
  EXPECT_EQ(msg("priority: 5", "priority: 500"), "spec.priority: 500 is outside [0, 100]");
  EXPECT_EQ(msg("name: test", "name: ''"), "spec.name: required");
  EXPECT_EQ(ParseJobSpec(Spec().replace(Spec().find("format: u16, samples"), 11, "format: u8,")).status().message(),
            "spec.data.calibration.format: 'u8' is not one of auto, u16, u32, text, jsonl");
  EXPECT_EQ(msg("lr: 1e-4", "lr: NaN"), "spec.stages[2].distill.lr: must be a finite number");
  EXPECT_EQ(msg("lr: 1e-4", "lr: .inf"), "spec.stages[2].distill.lr: must be a finite number");
  EXPECT_EQ(msg("lr: 1e-4", "lr: fast"), "spec.stages[2].distill.lr: 'fast' is not a number");
  EXPECT_EQ(msg("priority: 5", "priority: 5.5"), "spec.priority: '5.5' is not an integer");
  EXPECT_EQ(msg("lm_loss]", "lm_lost]"), "spec.stages[0].importance.depth[1]: unknown depth metric 'lm_lost'");
  EXPECT_EQ(msg("ranks: 2", "ranks: 2, slots_per_rank: 100000"),
            "spec.resources.slots_per_rank: 100000 is outside [0, 64]");
  EXPECT_NE(msg("  - importance: {depth: [block_influence, lm_loss]}\n", "").find("needs an importance stage"),
            std::string::npos);
  EXPECT_NE(Validate(Spec("  - {}\n")).message().find("spec.stages[3]: empty stage"), std::string::npos);
}

TEST_F(SpecTest, PathsMustStayUnderTheStorageRoots) {
  auto path_error = [&](const std::string& path) {
    return std::string(CheckStoragePath(path, {root_}, "spec.teacher.path").message());
  };
  EXPECT_EQ(path_error(root_ + "/models/t"), "");
  EXPECT_EQ(path_error(root_ + "/not/yet/written"), "");  // outputs need not exist
  EXPECT_NE(path_error("/etc/passwd").find("outside the storage roots"), std::string::npos);
  EXPECT_NE(path_error(root_ + "/../etc").find("contains '..'"), std::string::npos);
  EXPECT_NE(path_error("models/t").find("not an absolute path"), std::string::npos);
  EXPECT_NE(path_error(root_ + "x/models").find("outside"), std::string::npos);  // a sibling with a common prefix
  // A symlink inside the root that points outside is an escape.
  ASSERT_EQ(symlink("/etc", (root_ + "/escape").c_str()), 0);
  EXPECT_NE(path_error(root_ + "/escape/passwd").find("resolves to /etc/passwd"), std::string::npos);
  EXPECT_NE(CheckStoragePath(root_ + "/models/t", {}, "f").message().find("no storage root"), std::string::npos);
}

TEST_F(SpecTest, EnumsAreWrittenByTheirShortNames) {
  auto s = ParseJobSpec(Spec("  - export: {dtype: bf16}\n"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->data().calibration().format(), v1::DATA_FORMAT_U16);
  EXPECT_EQ(s->stages(3).export_().dtype(), v1::DTYPE_BFLOAT16);
  auto agg = ParseJobSpec(Spec().replace(Spec().find("{depth:"), 7, "{width: {batch_agg: var, seq_agg: l2}, depth:"));
  ASSERT_TRUE(agg.ok()) << agg.status();
  EXPECT_EQ(agg->stages(0).importance().width().batch_agg(), v1::AGGREGATION_VAR);
  EXPECT_EQ(agg->stages(0).importance().width().seq_agg(), v1::AGGREGATION_L2);
  const std::string json = JobSpecToJson(*agg);
  EXPECT_NE(json.find("\"batch_agg\":\"var\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"format\":\"u16\""), std::string::npos) << json;
  auto back = ParseJobSpec(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->SerializeAsString(), agg->SerializeAsString());
  EXPECT_EQ(ParseJobSpec(Spec("  - export: {dtype: int4}\n")).status().message(),
            "spec.stages[3].export.dtype: 'int4' is not one of bfloat16, float16, float32");
  // A value a gRPC client sends as a number outside the enum is refused by validation.
  v1::JobSpec raw = *s;
  raw.mutable_data()->mutable_calibration()->set_format(static_cast<v1::DataFormat>(42));
  EXPECT_EQ(ValidateJobSpec(raw, {root_}).message(), "spec.data.calibration.format: unknown value 42");
}

TEST_F(SpecTest, EverySearchIsBounded) {
  auto msg = [&](const std::string& search) {
    std::string y = Spec();
    const std::string target = "{target: {hidden_size: 192, intermediate_size: 512}}";
    y.replace(y.find(target), target.size(), "{search: " + search + "}");
    return std::string(Validate(y).message());
  };
  EXPECT_EQ(msg("{params: '0.5', candidates: 8, probe_tokens: 1M}"), "");
  EXPECT_EQ(msg("{params: '0.5', candidates: 100000000}"),
            "spec.stages[1].prune.search.candidates: 100000000 is outside [0, 64]");
  EXPECT_EQ(msg("{params: '0.5', tolerance: .nan}"), "spec.stages[1].prune.search.tolerance: must be a finite number");
  EXPECT_EQ(msg("{params: '0.5', min_width: -.inf}"), "spec.stages[1].prune.search.min_width: must be a finite number");
}

TEST_F(SpecTest, ADanglingSymlinkIsJudgedByWhereItPoints) {
  ASSERT_EQ(symlink("/nonexistent-topiary-target/x", (root_ + "/dangling").c_str()), 0);
  EXPECT_NE(CheckStoragePath(root_ + "/dangling", {root_}, "f").message().find("outside the storage roots"),
            std::string::npos);
  EXPECT_NE(CheckStoragePath(root_ + "/dangling/deeper/file", {root_}, "f").message().find("outside"),
            std::string::npos);
  ASSERT_EQ(symlink("loop", (root_ + "/loop").c_str()), 0);
  EXPECT_NE(CheckStoragePath(root_ + "/loop/x", {root_}, "f").message().find("too many levels"), std::string::npos);
  EXPECT_NE(CheckStoragePath("/" + std::string(5000, 'a'), {root_}, "f").message().find("longer than"),
            std::string::npos);
  // A relative symlink that stays inside is fine.
  ASSERT_EQ(symlink("models/t", (root_ + "/teacher-link").c_str()), 0);
  EXPECT_TRUE(CheckStoragePath(root_ + "/teacher-link", {root_}, "f").ok());
}

TEST(Examples, EveryExampleSpecParsesAndValidates) {
  const char* src = std::getenv("TOPIARY_SOURCE_DIR");
  const std::string dir = std::filesystem::absolute(std::string(src ? src : ".") + "/examples").lexically_normal();
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".yaml") continue;
    auto text = ReadFileToString(e.path().string(), 1 << 20);
    ASSERT_TRUE(text.ok());
    auto spec = ParseJobSpec(*text);
    ASSERT_TRUE(spec.ok()) << e.path() << ": " << spec.status();
    ResolveRelativePaths(&*spec, dir);  // as topiary run does: relative to the spec's directory
    absl::Status st = ValidateJobSpec(*spec, {std::filesystem::path(dir).parent_path().string()});
    EXPECT_TRUE(st.ok()) << e.path() << ": " << st;
    ++n;
  }
  EXPECT_GE(n, 8);
}

// The spec the Kubernetes submit Job carries (deploy/submit) is valid under
// the cluster's storage root.
TEST(Examples, TheKubernetesSubmitSpecParsesAndValidates) {
  const char* src = std::getenv("TOPIARY_SOURCE_DIR");
  auto text = ReadFileToString(std::string(src ? src : ".") + "/deploy/submit/spec.yaml", 1 << 20);
  ASSERT_TRUE(text.ok()) << text.status();
  auto spec = ParseJobSpec(*text);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(ValidateJobSpec(*spec, {"/storage"}).ok()) << ValidateJobSpec(*spec, {"/storage"});
  EXPECT_EQ(spec->resources().ranks(), 16);
}

}  // namespace
}  // namespace topiary::spec
