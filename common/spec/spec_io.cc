#include "common/spec/spec_io.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace topiary::spec {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using json = nlohmann::json;

absl::Status Bad(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::StatusOr<json> Convert(const YAML::Node& node, const Descriptor* d, const std::string& path);

// One value of `field` (a single element when the field is repeated).
absl::StatusOr<json> ConvertValue(const YAML::Node& node, const FieldDescriptor* f, const std::string& path) {
  if (f->type() == FieldDescriptor::TYPE_MESSAGE) return Convert(node, f->message_type(), path);
  if (!node.IsScalar()) return Bad(path, "expected a single value");
  const std::string s = node.Scalar();
  if (f->type() == FieldDescriptor::TYPE_BOOL) {
    if (s == "true" || s == "True" || s == "yes") return json(true);
    if (s == "false" || s == "False" || s == "no") return json(false);
    return Bad(path, absl::StrCat("'", s, "' is not true or false"));
  }
  return json(s);  // proto3 JSON reads numbers and enum names from strings
}

absl::StatusOr<json> Convert(const YAML::Node& node, const Descriptor* d, const std::string& path) {
  if (!node.IsMap()) return Bad(path, "expected a mapping");
  json out = json::object();
  for (const auto& kv : node) {
    const std::string key = kv.first.Scalar();
    const FieldDescriptor* f = d->FindFieldByName(key);
    if (f == nullptr) f = d->FindFieldByCamelcaseName(key);
    const std::string p = path.empty() ? key : absl::StrCat(path, ".", key);
    if (f == nullptr) return Bad(p, "unknown field");
    if (f->is_map()) {
      if (!kv.second.IsMap()) return Bad(p, "expected a mapping");
      json m = json::object();
      for (const auto& e : kv.second) {
        if (!e.second.IsScalar()) return Bad(absl::StrCat(p, ".", e.first.Scalar()), "expected a single value");
        m[e.first.Scalar()] = e.second.Scalar();
      }
      out[f->name()] = m;
    } else if (f->is_repeated()) {
      if (!kv.second.IsSequence()) return Bad(p, "expected a list");
      json a = json::array();
      for (size_t i = 0; i < kv.second.size(); ++i) {
        auto v = ConvertValue(kv.second[i], f, absl::StrCat(p, "[", i, "]"));
        if (!v.ok()) return v.status();
        a.push_back(*v);
      }
      out[f->name()] = a;
    } else {
      if (kv.second.IsNull()) continue;
      auto v = ConvertValue(kv.second, f, p);
      if (!v.ok()) return v.status();
      out[f->name()] = *v;
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<v1::JobSpec> ParseJobSpec(absl::string_view text) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("spec: line ", e.mark.line + 1, ": ", e.msg));
  }
  absl::StatusOr<json> j = Convert(root, v1::JobSpec::descriptor(), "spec");
  if (!j.ok()) return j.status();
  v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions o;
  auto st = google::protobuf::util::JsonStringToMessage(j->dump(), &spec, o);
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("spec: ", st.message().as_string()));
  return spec;
}

std::string JobSpecToJson(const v1::JobSpec& spec) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(spec, &out, o);
  return out;
}

}  // namespace topiary::spec
