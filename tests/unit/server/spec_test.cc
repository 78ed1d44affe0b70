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
           "teacher: {path: " + root_ + "/models/t}\n"
           "data:\n"
           "  calibration: {path: " + root_ + "/data/c.bin, format: u16, samples: 64, seq_len: 256}\n"
           "  train: {path: " + root_ + "/data/t.bin, format: u16, seq_len: 256}\n"
           "stages:\n"
           "  - importance: {depth: [block_influence, lm_loss]}\n"
           "  - prune: {target: {hidden_size: 192, intermediate_size: 512}}\n"
           "  - distill: {tokens: 100M, lr: 1e-4, min_lr: 1e-5, global_batch: 16, micro_batch: 4}\n" +
           stages_extra +
           "resources: {ranks: 2}\npriority: 5\nlabels: {team: nlp}\n";
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
  EXPECT_EQ(msg("priority: 5", "priority: 500"), "spec.priority: 500 outside [0, 100]");
  EXPECT_EQ(msg("name: test", "name: ''"), "spec.name: required");
  EXPECT_EQ(msg("format: u16, samples", "format: u8, samples"),
            "spec.data.calibration.format: 'u8' is not u16, u32, text or jsonl");
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

TEST(Examples, EveryExampleSpecParsesAndValidates) {
  const char* src = std::getenv("TOPIARY_SOURCE_DIR");
  const std::string dir = std::string(src ? src : ".") + "/examples";
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".yaml") continue;
    auto text = ReadFileToString(e.path().string(), 1 << 20);
    ASSERT_TRUE(text.ok());
    auto spec = ParseJobSpec(*text);
    ASSERT_TRUE(spec.ok()) << e.path() << ": " << spec.status();
    absl::Status st = ValidateJobSpec(*spec, {"/srv/topiary"});
    EXPECT_TRUE(st.ok()) << e.path() << ": " << st;
    ++n;
  }
  EXPECT_GE(n, 2);
}

}  // namespace
}  // namespace topiary::spec
