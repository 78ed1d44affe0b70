#include "worker/model/config.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status_macros.h"

namespace topiary::model {
namespace {

using json = nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", field, ": ", what));
}

// Reads a required positive integer field.
absl::StatusOr<int64_t> RequiredInt(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return FieldError(field, "missing");
  if (!it->is_number_integer()) return FieldError(field, "must be an integer");
  int64_t v = it->get<int64_t>();
  if (v <= 0) return FieldError(field, absl::StrCat("must be positive, got ", v));
  return v;
}

absl::StatusOr<int64_t> OptionalInt(const json& j, const char* field, int64_t def) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number_integer()) return FieldError(field, "must be an integer");
  return it->get<int64_t>();
}

absl::StatusOr<double> OptionalNumber(const json& j, const char* field, double def) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number()) return FieldError(field, "must be a number");
  return it->get<double>();
}

absl::StatusOr<bool> OptionalBool(const json& j, const char* field, bool def) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean()) return FieldError(field, "must be true or false");
  return it->get<bool>();
}

absl::StatusOr<Family> ParseFamily(const json& j) {
  std::string arch, type;
  if (auto it = j.find("architectures"); it != j.end()) {
    if (!it->is_array() || it->size() != 1 || !(*it)[0].is_string()) {
      return FieldError("architectures", "must be a list with one architecture name");
    }
    arch = (*it)[0].get<std::string>();
  }
  if (auto it = j.find("model_type"); it != j.end() && it->is_string()) type = it->get<std::string>();
  if (arch.empty() && type.empty()) return FieldError("architectures", "missing (and no model_type)");
  struct Known {
    const char* arch;
    const char* type;
    Family family;
  };
  static const Known kKnown[] = {{"LlamaForCausalLM", "llama", Family::kLlama},
                                 {"MistralForCausalLM", "mistral", Family::kMistral},
                                 {"Qwen2ForCausalLM", "qwen2", Family::kQwen2}};
  for (const Known& k : kKnown) {
    bool arch_ok = arch.empty() || arch == k.arch;
    bool type_ok = type.empty() || type == k.type;
    if ((arch == k.arch || type == k.type) && arch_ok && type_ok) return k.family;
  }
  if (!arch.empty()) {
    return FieldError("architectures",
                      absl::StrCat("unsupported architecture '", arch, "' (model_type '", type,
                                   "'); supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"));
  }
  return FieldError("model_type", absl::StrCat("unsupported model_type '", type, "'"));
}

// Rope scaling as config.json spells it: `rope_scaling` (transformers 4) or
// `rope_parameters` (transformers 5, which also moves rope_theta inside it).
// A non-null rope_scaling wins, as transformers 5 reads them.
absl::Status ParseRopeScaling(const json& j, RopeScaling* out, double* rope_theta) {
  std::string field = "rope_scaling";
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    field = "rope_parameters";
    it = j.find(field);
  }
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return FieldError(field, "must be an object or null");
  const json& rs = *it;
  if (rs.contains("rope_theta")) {
    ASSIGN_OR_RETURN(*rope_theta, OptionalNumber(rs, "rope_theta", *rope_theta));
  }
  std::string type;
  if (auto t = rs.find("rope_type"); t != rs.end() && t->is_string())
    type = t->get<std::string>();
  else if (auto t2 = rs.find("type"); t2 != rs.end() && t2->is_string())
    type = t2->get<std::string>();
  else if (field == "rope_parameters")
    type = "default";
  else
    return FieldError("rope_scaling.rope_type", "missing");
  if (type == "default") return absl::OkStatus();
  ASSIGN_OR_RETURN(out->factor, OptionalNumber(rs, "factor", 1.0));
  if (!(out->factor > 0)) return FieldError(field + ".factor", "must be positive");
  if (type == "linear") {
    out->type = RopeScaling::Type::kLinear;
  } else if (type == "dynamic") {
    out->type = RopeScaling::Type::kDynamic;
    if (!(out->factor >= 1)) return FieldError(field + ".factor", "must be at least 1 for dynamic scaling");
  } else if (type == "llama3") {
    out->type = RopeScaling::Type::kLlama3;
    ASSIGN_OR_RETURN(out->low_freq_factor, OptionalNumber(rs, "low_freq_factor", 1.0));
    ASSIGN_OR_RETURN(out->high_freq_factor, OptionalNumber(rs, "high_freq_factor", 4.0));
    ASSIGN_OR_RETURN(out->original_max_position_embeddings, OptionalInt(rs, "original_max_position_embeddings", 8192));
    if (!(out->high_freq_factor > out->low_freq_factor)) {
      return FieldError(field + ".high_freq_factor", "must be larger than low_freq_factor");
    }
    if (out->original_max_position_embeddings <= 0) {
      return FieldError(field + ".original_max_position_embeddings", "must be positive");
    }
  } else {
    return FieldError(field + ".rope_type",
                      absl::StrCat("unsupported '", type, "' (supported: default, linear, dynamic, llama3)"));
  }
  return absl::OkStatus();
}

absl::Status ParseTopiarySection(const json& j, ModelConfig* c) {
  auto it = j.find("topiary");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return FieldError("topiary", "must be an object");
  for (const char* key : {"has_attention", "has_mlp"}) {
    auto f = it->find(key);
    if (f == it->end()) continue;
    if (!f->is_array()) return FieldError(absl::StrCat("topiary.", key), "must be a list of booleans");
    std::vector<bool> v;
    for (const auto& e : *f) {
      if (!e.is_boolean()) return FieldError(absl::StrCat("topiary.", key), "must be a list of booleans");
      v.push_back(e.get<bool>());
    }
    (std::string(key) == "has_attention" ? c->has_attention : c->has_mlp) = std::move(v);
  }
  return absl::OkStatus();
}

}  // namespace

bool ModelConfig::IsIsomorphic() const {
  for (bool b : has_attention)
    if (!b) return false;
  for (bool b : has_mlp)
    if (!b) return false;
  return true;
}

absl::string_view FamilyArchitecture(Family family) {
  switch (family) {
    case Family::kLlama:
      return "LlamaForCausalLM";
    case Family::kMistral:
      return "MistralForCausalLM";
    case Family::kQwen2:
      return "Qwen2ForCausalLM";
  }
  return "";
}

absl::string_view FamilyModelType(Family family) {
  switch (family) {
    case Family::kLlama:
      return "llama";
    case Family::kMistral:
      return "mistral";
    case Family::kQwen2:
      return "qwen2";
  }
  return "";
}

absl::StatusOr<ModelConfig> ParseConfigJson(absl::string_view json_text) {
  json j = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("config.json: not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("config.json: must be a JSON object");
  ModelConfig c;
  c.original_json = std::string(json_text);
  ASSIGN_OR_RETURN(c.family, ParseFamily(j));
  ASSIGN_OR_RETURN(c.hidden_size, RequiredInt(j, "hidden_size"));
  ASSIGN_OR_RETURN(c.intermediate_size, RequiredInt(j, "intermediate_size"));
  ASSIGN_OR_RETURN(c.num_attention_heads, RequiredInt(j, "num_attention_heads"));
  ASSIGN_OR_RETURN(c.num_hidden_layers, RequiredInt(j, "num_hidden_layers"));
  ASSIGN_OR_RETURN(c.vocab_size, RequiredInt(j, "vocab_size"));
  ASSIGN_OR_RETURN(c.num_key_value_heads, OptionalInt(j, "num_key_value_heads", c.num_attention_heads));
  if (c.num_hidden_layers > 0 && c.hidden_size % c.num_attention_heads != 0 && !j.contains("head_dim")) {
    return FieldError("head_dim", "missing, and hidden_size is not a multiple of num_attention_heads");
  }
  ASSIGN_OR_RETURN(c.head_dim, OptionalInt(j, "head_dim", c.hidden_size / c.num_attention_heads));
  ASSIGN_OR_RETURN(c.rms_norm_eps, OptionalNumber(j, "rms_norm_eps", 1e-6));
  ASSIGN_OR_RETURN(c.rope_theta, OptionalNumber(j, "rope_theta", 10000.0));
  ASSIGN_OR_RETURN(c.max_position_embeddings, OptionalInt(j, "max_position_embeddings", 2048));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, OptionalBool(j, "tie_word_embeddings", false));
  ASSIGN_OR_RETURN(c.bos_token_id, OptionalInt(j, "bos_token_id", 1));
  if (auto it = j.find("eos_token_id");
      it != j.end() && it->is_array() && !it->empty() && (*it)[0].is_number_integer()) {
    c.eos_token_id = (*it)[0].get<int64_t>();  // Llama 3.1 lists several; the first ends text
  } else {
    ASSIGN_OR_RETURN(c.eos_token_id, OptionalInt(j, "eos_token_id", 2));
  }
  if (auto it = j.find("torch_dtype"); it != j.end() && it->is_string()) {
    c.torch_dtype = it->get<std::string>();
  } else if (auto d = j.find("dtype"); d != j.end() && d->is_string()) {
    c.torch_dtype = d->get<std::string>();  // transformers 5's name for it
  }
  ASSIGN_OR_RETURN(bool attention_bias, OptionalBool(j, "attention_bias", false));
  ASSIGN_OR_RETURN(c.mlp_bias, OptionalBool(j, "mlp_bias", false));
  switch (c.family) {
    case Family::kLlama:
      c.qkv_bias = attention_bias;
      c.o_bias = attention_bias;
      break;
    case Family::kMistral:
      if (attention_bias) return FieldError("attention_bias", "Mistral has no attention bias");
      break;
    case Family::kQwen2:
      c.qkv_bias = true;
      c.o_bias = false;
      break;
  }
  if (c.mlp_bias && c.family != Family::kLlama) return FieldError("mlp_bias", "only Llama supports mlp_bias");
  RETURN_IF_ERROR(ParseRopeScaling(j, &c.rope_scaling, &c.rope_theta));
  RETURN_IF_ERROR(ParseTopiarySection(j, &c));
  if (auto it = j.find("layer_types"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return FieldError("layer_types", "must be a list of strings");
    for (const auto& e : *it) {
      if (!e.is_string()) return FieldError("layer_types", "must be a list of strings");
      c.layer_types.push_back(e.get<std::string>());
      if (c.layer_types.back() != "full_attention") {
        return FieldError("layer_types", absl::StrCat("'", c.layer_types.back(),
                                                      "' layers are not supported (only full_attention: Topiary has "
                                                      "no sliding-window attention yet)"));
      }
    }
  }
  RETURN_IF_ERROR(ValidateConfig(c));
  return c;
}

absl::Status ValidateConfig(const ModelConfig& c) {
  struct Pos {
    const char* name;
    int64_t v;
  };
  for (Pos p : {Pos{"hidden_size", c.hidden_size}, Pos{"intermediate_size", c.intermediate_size},
                Pos{"num_attention_heads", c.num_attention_heads}, Pos{"num_key_value_heads", c.num_key_value_heads},
                Pos{"head_dim", c.head_dim}, Pos{"num_hidden_layers", c.num_hidden_layers},
                Pos{"vocab_size", c.vocab_size}, Pos{"max_position_embeddings", c.max_position_embeddings}}) {
    if (p.v <= 0) return FieldError(p.name, absl::StrCat("must be positive, got ", p.v));
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return FieldError(
        "num_key_value_heads",
        absl::StrCat(c.num_key_value_heads, " does not divide num_attention_heads ", c.num_attention_heads));
  }
  if (c.head_dim % 2 != 0) return FieldError("head_dim", "must be even for rotary embeddings");
  if (!(c.rms_norm_eps > 0)) return FieldError("rms_norm_eps", "must be positive");
  if (!(c.rope_theta > 0)) return FieldError("rope_theta", "must be positive");
  if (!c.has_attention.empty() && static_cast<int64_t>(c.has_attention.size()) != c.num_hidden_layers) {
    return FieldError("topiary.has_attention", "must list one entry per layer");
  }
  if (!c.has_mlp.empty() && static_cast<int64_t>(c.has_mlp.size()) != c.num_hidden_layers) {
    return FieldError("topiary.has_mlp", "must list one entry per layer");
  }
  if (!c.layer_types.empty() && static_cast<int64_t>(c.layer_types.size()) != c.num_hidden_layers) {
    return FieldError("layer_types", absl::StrCat("lists ", c.layer_types.size(), " layers, num_hidden_layers is ",
                                                  c.num_hidden_layers));
  }
  if (c.bos_token_id >= c.vocab_size || c.eos_token_id >= c.vocab_size) {
    return FieldError("eos_token_id", "bos/eos token ids must be below vocab_size");
  }
  return absl::OkStatus();
}

std::string ConfigToJson(const ModelConfig& c) {
  json j = json::object();
  if (!c.original_json.empty()) {
    json orig = json::parse(c.original_json, nullptr, false);
    if (orig.is_object()) j = orig;
  }
  j["architectures"] = {std::string(FamilyArchitecture(c.family))};
  j["model_type"] = std::string(FamilyModelType(c.family));
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["vocab_size"] = c.vocab_size;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = c.torch_dtype;
  j["hidden_act"] = "silu";
  if (!j.contains("bos_token_id")) j["bos_token_id"] = c.bos_token_id;
  if (!j.contains("eos_token_id")) j["eos_token_id"] = c.eos_token_id;
  if (c.family == Family::kLlama) {
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
  }
  switch (c.rope_scaling.type) {
    case RopeScaling::Type::kNone:
      j["rope_scaling"] = nullptr;
      break;
    case RopeScaling::Type::kLinear:
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
      break;
    case RopeScaling::Type::kDynamic:
      j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", c.rope_scaling.factor}};
      break;
    case RopeScaling::Type::kLlama3:
      j["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", c.rope_scaling.factor},
                           {"low_freq_factor", c.rope_scaling.low_freq_factor},
                           {"high_freq_factor", c.rope_scaling.high_freq_factor},
                           {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
      break;
  }
  if (j.contains("rope_parameters")) {  // transformers 5 reads this one: keep it in step
    json rp = j["rope_scaling"].is_object() ? j["rope_scaling"] : json{{"rope_type", "default"}};
    rp["rope_theta"] = c.rope_theta;
    j["rope_parameters"] = rp;
  }
  if (j.contains("dtype")) j["dtype"] = c.torch_dtype;
  if (c.layer_types.empty()) {
    j.erase("layer_types");
  } else {
    j["layer_types"] = c.layer_types;
  }
  j.erase("topiary");
  if (!c.IsIsomorphic()) {
    j["topiary"] = {{"isomorphic", false}, {"has_attention", c.has_attention}, {"has_mlp", c.has_mlp}};
  }
  return j.dump(2) + "\n";
}

ModelConfig KeepLayers(const ModelConfig& config, const std::vector<int64_t>& layers) {
  ModelConfig c = config;
  c.num_hidden_layers = static_cast<int64_t>(layers.size());
  auto pick = [&](auto& v) {
    if (v.empty()) return;
    auto all = v;
    v.clear();
    for (int64_t l : layers) v.push_back(all[l]);
  };
  pick(c.has_attention);
  pick(c.has_mlp);
  pick(c.layer_types);
  return c;
}

ParamCounts CountParams(const ModelConfig& c) {
  ParamCounts p;
  const int64_t C = c.hidden_size, HS = c.head_dim, NH = c.num_attention_heads, G = c.num_key_value_heads,
                FF = c.intermediate_size;
  p.embedding = c.vocab_size * C;
  p.lm_head = c.tie_word_embeddings ? 0 : c.vocab_size * C;
  p.norms = C;  // final norm
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (c.LayerHasAttention(l)) {
      p.attention += C * NH * HS + 2 * C * G * HS + NH * HS * C;
      if (c.qkv_bias) p.attention += NH * HS + 2 * G * HS;
      if (c.o_bias) p.attention += C;
      p.norms += C;
    }
    if (c.LayerHasMlp(l)) {
      p.mlp += 3 * C * FF;
      if (c.mlp_bias) p.mlp += 2 * FF + C;
      p.norms += C;
    }
  }
  return p;
}

absl::StatusOr<ModelConfig> LoadConfig(const std::string& dir) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(dir + "/config.json", 16 << 20));
  auto config = ParseConfigJson(text);
  if (!config.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, "/", config.status().message()));
  return config;
}

}  // namespace topiary::model
