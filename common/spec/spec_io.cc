#include "common/spec/spec_io.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_bounds.h"
#include "common/status_macros.h"

namespace topiary::spec {

std::string EnumValueShortName(const google::protobuf::EnumValueDescriptor* v) {
  // The type's name in UPPER_SNAKE is the values' prefix: DataFormat -> DATA_FORMAT_.
  std::string prefix;
  for (char c : v->type()->name()) {
    if (absl::ascii_isupper(c) && !prefix.empty()) prefix.push_back('_');
    prefix.push_back(absl::ascii_toupper(c));
  }
  prefix.push_back('_');
  std::string name = v->name();
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  return absl::AsciiStrToLower(name);
}

const google::protobuf::EnumValueDescriptor* FindEnumValueByShortName(const google::protobuf::EnumDescriptor* e,
                                                                      absl::string_view name) {
  std::string n = absl::AsciiStrToLower(name);
  if (e == v1::Dtype_descriptor()) {  // the usual abbreviations
    if (n == "bf16") n = "bfloat16";
    if (n == "fp16") n = "float16";
    if (n == "fp32") n = "float32";
  }
  for (int i = 0; i < e->value_count(); ++i) {
    const google::protobuf::EnumValueDescriptor* v = e->value(i);
    if (v->number() != 0 && (EnumValueShortName(v) == n || v->name() == name)) return v;
  }
  return nullptr;
}

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using json = nlohmann::json;

absl::Status Bad(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// Values a spec may hold, counted as they are converted: YAML aliases let a
// small text name the same large node many times over.
constexpr int64_t kMaxSpecValues = 100000;

absl::StatusOr<json> Convert(const YAML::Node& node, const Descriptor* d, const std::string& path, int64_t* budget);

// An enum value written by its short name (see EnumValueShortName).
absl::StatusOr<json> ConvertEnum(const std::string& s, const google::protobuf::EnumDescriptor* e,
                                 const std::string& path) {
  const google::protobuf::EnumValueDescriptor* v = FindEnumValueByShortName(e, s);
  if (v == nullptr) {
    std::vector<std::string> names;
    for (int i = 0; i < e->value_count(); ++i) {
      if (e->value(i)->number() != 0) names.push_back(EnumValueShortName(e->value(i)));
    }
    return Bad(path, absl::StrCat("'", s, "' is not one of ", absl::StrJoin(names, ", ")));
  }
  return json(v->name());
}

// One value of `field` (a single element when the field is repeated).
absl::StatusOr<json> ConvertValue(const YAML::Node& node, const FieldDescriptor* f, const std::string& path,
                                  int64_t* budget) {
  if (f->type() == FieldDescriptor::TYPE_MESSAGE) return Convert(node, f->message_type(), path, budget);
  if (!node.IsScalar()) return Bad(path, "expected a single value");
  const std::string s = node.Scalar();
  if (f->type() == FieldDescriptor::TYPE_ENUM) return ConvertEnum(s, f->enum_type(), path);
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_DOUBLE || f->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT) {
    // YAML's spellings of the special values; validation refuses them where a finite number is needed.
    if (s == ".nan" || s == ".NaN" || s == "NaN" || s == "nan") return json("NaN");
    if (s == ".inf" || s == "+.inf" || s == ".Inf" || s == "inf") return json("Infinity");
    if (s == "-.inf" || s == "-.Inf" || s == "-inf") return json("-Infinity");
    double v = 0;
    if (!absl::SimpleAtod(s, &v)) return Bad(path, absl::StrCat("'", s.substr(0, 64), "' is not a number"));
    return json(s);
  }
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_INT32 || f->cpp_type() == FieldDescriptor::CPPTYPE_INT64) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(s, &v)) return Bad(path, absl::StrCat("'", s.substr(0, 64), "' is not an integer"));
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_INT32 && (v > INT32_MAX || v < INT32_MIN)) {
      return Bad(path, absl::StrCat(s, " is out of range"));
    }
    return json(s);
  }
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_UINT32 || f->cpp_type() == FieldDescriptor::CPPTYPE_UINT64) {
    uint64_t v = 0;
    if (!absl::SimpleAtoi(s, &v))
      return Bad(path, absl::StrCat("'", s.substr(0, 64), "' is not a non-negative integer"));
    return json(s);
  }
  if (f->type() == FieldDescriptor::TYPE_BOOL) {
    if (s == "true" || s == "True" || s == "yes") return json(true);
    if (s == "false" || s == "False" || s == "no") return json(false);
    return Bad(path, absl::StrCat("'", s, "' is not true or false"));
  }
  return json(s);  // proto3 JSON reads numbers and enum names from strings
}

absl::StatusOr<json> Convert(const YAML::Node& node, const Descriptor* d, const std::string& path, int64_t* budget) {
  if (!node.IsMap()) return Bad(path, "expected a mapping");
  json out = json::object();
  for (const auto& kv : node) {
    if (--*budget < 0)
      return Bad("spec", absl::StrCat("more than ", kMaxSpecValues, " values (aliases counted each time)"));
    if (!kv.first.IsScalar()) return Bad(path, "keys must be names");
    const std::string key = kv.first.Scalar();
    const FieldDescriptor* f = d->FindFieldByName(key);
    if (f == nullptr) f = d->FindFieldByCamelcaseName(key);
    const std::string p = path.empty() ? key : absl::StrCat(path, ".", key);
    if (f == nullptr) return Bad(p, "unknown field");
    if (f->is_map()) {
      if (!kv.second.IsMap()) return Bad(p, "expected a mapping");
      json m = json::object();
      for (const auto& e : kv.second) {
        if (--*budget < 0) return Bad("spec", absl::StrCat("more than ", kMaxSpecValues, " values"));
        if (!e.first.IsScalar()) return Bad(p, "keys must be names");
        if (!e.second.IsScalar()) return Bad(absl::StrCat(p, ".", e.first.Scalar()), "expected a single value");
        m[e.first.Scalar()] = e.second.Scalar();
      }
      out[f->name()] = m;
    } else if (f->is_repeated()) {
      if (!kv.second.IsSequence()) return Bad(p, "expected a list");
      json a = json::array();
      for (size_t i = 0; i < kv.second.size(); ++i) {
        if (--*budget < 0)
          return Bad("spec", absl::StrCat("more than ", kMaxSpecValues, " values (aliases counted each time)"));
        auto v = ConvertValue(kv.second[i], f, absl::StrCat(p, "[", i, "]"), budget);
        if (!v.ok()) return v.status();
        a.push_back(*v);
      }
      out[f->name()] = a;
    } else {
      if (kv.second.IsNull()) continue;
      auto v = ConvertValue(kv.second, f, p, budget);
      if (!v.ok()) return v.status();
      out[f->name()] = *v;
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<v1::JobSpec> ParseJobSpec(absl::string_view text) {
  // Bounded before the (recursive) YAML parser sees it: size, and the nesting of flow collections.
  RETURN_IF_ERROR(CheckJsonBounds(text, kMaxSpecTextBytes, kMaxSpecNesting, "spec"));
  RETURN_IF_ERROR(CheckUtf8(text, "spec"));
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("spec: line ", e.mark.line + 1, ": ", e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("spec: ", e.what()));
  }
  int64_t budget = kMaxSpecValues;
  absl::StatusOr<json> j = Convert(root, v1::JobSpec::descriptor(), "spec", &budget);
  if (!j.ok()) return j.status();
  v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions o;
  std::string text_json;
  try {
    text_json = j->dump();
  } catch (const json::exception&) {  // a YAML escape made a string that is not UTF-8 (e.g. "\ud800")
    return absl::InvalidArgumentError("spec: a string is not valid UTF-8");
  }
  auto st = google::protobuf::util::JsonStringToMessage(text_json, &spec, o);
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("spec: ", st.message().as_string()));
  return spec;
}

namespace {

// Rewrites every enum value of `j` (printed by its full name) to its short name.
void ShortenEnums(json& j, const Descriptor* d) {
  if (!j.is_object()) return;
  for (auto& [key, value] : j.items()) {
    const FieldDescriptor* f = d->FindFieldByName(key);
    if (f == nullptr) continue;
    auto one = [&](json& v) {
      if (f->type() == FieldDescriptor::TYPE_MESSAGE && !f->is_map()) ShortenEnums(v, f->message_type());
      if (f->type() == FieldDescriptor::TYPE_ENUM && v.is_string()) {
        const auto* ev = f->enum_type()->FindValueByName(v.get<std::string>());
        if (ev != nullptr) v = EnumValueShortName(ev);
      }
    };
    if (value.is_array()) {
      for (json& v : value) one(v);
    } else {
      one(value);
    }
  }
}

}  // namespace

std::string MessageToSpecJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  json j = json::parse(out, nullptr, false);
  if (j.is_discarded()) return out;
  ShortenEnums(j, m.GetDescriptor());
  return j.dump();
}

std::string JobSpecToJson(const v1::JobSpec& spec) { return MessageToSpecJson(spec); }

namespace {
void Resolve(std::string* path, const std::filesystem::path& base) {
  if (path->empty() || (*path)[0] == '/') return;
  *path = (base / *path).lexically_normal().string();
}
}  // namespace

void ResolveRelativePaths(v1::JobSpec* spec, const std::string& base_dir) {
  const std::filesystem::path base = std::filesystem::absolute(base_dir);
  Resolve(spec->mutable_teacher()->mutable_path(), base);
  for (v1::DataSource* d : {spec->mutable_data()->mutable_calibration(), spec->mutable_data()->mutable_train(),
                            spec->mutable_data()->mutable_eval()}) {
    Resolve(d->mutable_path(), base);
    Resolve(d->mutable_tokenizer(), base);
  }
  for (v1::StageSpec& s : *spec->mutable_stages()) {
    if (s.has_evaluate()) {
      for (std::string& t : *s.mutable_evaluate()->mutable_tasks()) Resolve(&t, base);
    }
    if (s.has_export_()) Resolve(s.mutable_export_()->mutable_path(), base);
  }
}

}  // namespace topiary::spec
