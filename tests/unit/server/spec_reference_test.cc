// The README's spec reference documents every field of topiary.v1.JobSpec,
// and nothing that is not one: a field added to the proto without a row (or
// a row left behind by a removed field) fails here.
#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "common/file_util.h"
#include "topiary/v1/job.pb.h"

namespace topiary {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

void Walk(const Descriptor* d, const std::string& prefix, std::set<std::string>* out) {
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    std::string path = prefix + f->name();
    if (f->type() == FieldDescriptor::TYPE_MESSAGE && !f->is_map()) {
      if (f->is_repeated()) path += "[]";
      Walk(f->message_type(), path + ".", out);
    } else {
      out->insert(path);
    }
  }
}

// "a.{x,y}.b" -> "a.x.b", "a.y.b" (one level of braces, several groups).
void Expand(const std::string& s, std::set<std::string>* out) {
  const size_t open = s.find('{');
  if (open == std::string::npos) {
    out->insert(s);
    return;
  }
  const size_t close = s.find('}', open);
  std::string inner = s.substr(open + 1, close - open - 1);
  size_t start = 0;
  for (;;) {
    const size_t comma = inner.find(',', start);
    Expand(s.substr(0, open) + inner.substr(start, comma - start) + s.substr(close + 1), out);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
}

TEST(SpecReference, DocumentsEveryFieldAndOnlyThose) {
  const char* src = std::getenv("TOPIARY_SOURCE_DIR");
  auto readme = ReadFileToString(std::string(src ? src : ".") + "/README.md", 1 << 22);
  ASSERT_TRUE(readme.ok());
  const size_t begin = readme->find("## The job spec reference");
  ASSERT_NE(begin, std::string::npos);
  const size_t end = readme->find("\n## ", begin + 10);
  const std::string section = readme->substr(begin, end - begin);
  std::set<std::string> documented;
  std::regex row(R"(\n\| `([^`]+)` \|)");
  for (auto it = std::sregex_iterator(section.begin(), section.end(), row); it != std::sregex_iterator(); ++it) {
    Expand((*it)[1].str(), &documented);
  }
  std::set<std::string> fields;
  Walk(v1::JobSpec::descriptor(), "", &fields);
  ASSERT_GT(fields.size(), 50u);
  for (const std::string& f : fields) EXPECT_TRUE(documented.count(f)) << "README spec reference lacks `" << f << "`";
  for (const std::string& d : documented)
    EXPECT_TRUE(fields.count(d)) << "README documents `" << d << "`, no such field";
}

}  // namespace
}  // namespace topiary
