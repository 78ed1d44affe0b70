#include "worker/model/config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace topiary::model {
namespace {

using json = nlohmann::json;

json LlamaJson() {
  return json::parse(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8, "num_hidden_layers": 32,
    "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": false, "torch_dtype": "bfloat16", "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "custom_field": "kept"})");
}

absl::Status ParseError(const json& j) { return ParseConfigJson(j.dump()).status(); }

TEST(Config, ParsesLlama31) {
  auto c = ParseConfigJson(LlamaJson().dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->family, Family::kLlama);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->q_per_group(), 4);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c->eos_token_id, 128001);
  EXPECT_FALSE(c->qkv_bias);
  // Llama 3.1 8B has 8.03B parameters.
  EXPECT_EQ(CountParams(*c).total(), 8030261248);
}

TEST(Config, Qwen2HasQkvBiasOnly) {
  json j = {{"architectures", {"Qwen2ForCausalLM"}},
            {"model_type", "qwen2"},
            {"hidden_size", 896},
            {"intermediate_size", 4864},
            {"num_attention_heads", 14},
            {"num_key_value_heads", 2},
            {"num_hidden_layers", 24},
            {"vocab_size", 151936},
            {"tie_word_embeddings", true}};
  auto c = ParseConfigJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->o_bias);
  EXPECT_EQ(c->head_dim, 64);
  // Counted by hand: tied embedding 151936*896; per layer q 896*896+896,
  // k and v 896*128+128 each, o 896*896, MLP 3*896*4864, two norms 896.
  EXPECT_EQ(CountParams(*c).total(), 494032768);  // the published Qwen2-0.5B count
}

// transformers 5 writes rope_parameters (rope_theta inside it) and dtype.
TEST(Config, ParsesTransformers5RopeParameters) {
  json j = LlamaJson();
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j.erase("torch_dtype");
  j["dtype"] = "bfloat16";
  j["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                          {"factor", 8.0},           {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  auto c = ParseConfigJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  c = ParseConfigJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone);
  j["rope_parameters"] = {{"rope_type", "dynamic"}, {"rope_theta", 1e4}, {"factor", 2.0}};
  c = ParseConfigJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kDynamic);
  EXPECT_EQ(c->rope_scaling.factor, 2.0);
  j["rope_parameters"]["factor"] = 0.5;
  EXPECT_NE(ParseError(j).message().find("rope_parameters.factor"), std::string::npos) << ParseError(j);
  j["rope_parameters"] = {{"rope_type", "yarn"}};
  EXPECT_NE(ParseError(j).message().find("rope_parameters.rope_type"), std::string::npos) << ParseError(j);
  j["rope_parameters"] = "dynamic";
  EXPECT_NE(ParseError(j).message().find("rope_parameters"), std::string::npos) << ParseError(j);
  // Both spelt: a non-null rope_scaling wins, as in transformers 5.
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e4}};
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  c = ParseConfigJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLinear);
}

// transformers 5's layer_types: one entry per layer, refused otherwise, and
// kept in step when layers go (a depth-pruned Qwen2 that still listed every
// original layer would not load in transformers).
TEST(Config, LayerTypesFollowTheLayers) {
  json j = LlamaJson();
  j["num_hidden_layers"] = 3;
  j["layer_types"] = {"full_attention", "full_attention", "full_attention"};
  j.erase("rope_scaling");  // transformers 5 writes rope_parameters alone
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  j["dtype"] = "float32";
  auto c = ParseConfigJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->layer_types.size(), 3u);
  ModelConfig kept = KeepLayers(*c, {0, 1});
  EXPECT_EQ(kept.num_hidden_layers, 2);
  EXPECT_EQ(kept.layer_types, (std::vector<std::string>{"full_attention", "full_attention"}));
  kept.torch_dtype = "bfloat16";
  json out = json::parse(ConfigToJson(kept));
  EXPECT_EQ(out["layer_types"], json({"full_attention", "full_attention"}));
  EXPECT_EQ(out["dtype"], "bfloat16");
  EXPECT_EQ(out["rope_parameters"]["rope_theta"], 1e6);
  auto again = ParseConfigJson(out.dump());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->num_hidden_layers, 2);
  j["layer_types"] = {"full_attention"};
  EXPECT_NE(ParseError(j).message().find("layer_types"), std::string::npos) << ParseError(j);
  j["layer_types"] = {1, 2, 3};
  EXPECT_NE(ParseError(j).message().find("layer_types"), std::string::npos) << ParseError(j);
  j["layer_types"] = {"full_attention", "sliding_attention", "full_attention"};  // no sliding window yet
  EXPECT_NE(ParseError(j).message().find("sliding_attention"), std::string::npos) << ParseError(j);
}

TEST(Config, ExplicitHeadDimIsKept) {
  json j = LlamaJson();
  j["architectures"] = {"MistralForCausalLM"};
  j["model_type"] = "mistral";
  j["head_dim"] = 160;
  j.erase("rope_scaling");
  auto c = ParseConfigJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 160);
}

TEST(Config, RefusalsNameTheField) {
  struct Case {
    std::function<void(json&)> edit;
    std::string field;
  };
  std::vector<Case> cases = {
      {[](json& j) {
         j["architectures"] = {"GPT2LMHeadModel"};
         j["model_type"] = "gpt2";
       },
       "architectures"},
      {[](json& j) { j.erase("hidden_size"); }, "hidden_size"},
      {[](json& j) { j["num_attention_heads"] = 0; }, "num_attention_heads"},
      {[](json& j) { j["num_key_value_heads"] = 5; }, "num_key_value_heads"},
      {[](json& j) { j["vocab_size"] = "big"; }, "vocab_size"},
      {[](json& j) { j["rope_scaling"]["rope_type"] = "yarn"; }, "rope_scaling.rope_type"},
      {[](json& j) { j["rope_scaling"]["high_freq_factor"] = 0.5; }, "rope_scaling.high_freq_factor"},
      {[](json& j) { j["tie_word_embeddings"] = "yes"; }, "tie_word_embeddings"},
      {[](json& j) {
         j["hidden_size"] = 4000;
         j["num_attention_heads"] = 33;
         j["num_key_value_heads"] = 11;
       },
       "head_dim"},
      {[](json& j) {
         j["architectures"] = {"MistralForCausalLM"};
         j["model_type"] = "llama";
       },
       "architectures"},
  };
  for (const Case& c : cases) {
    json j = LlamaJson();
    c.edit(j);
    absl::Status st = ParseError(j);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << j.dump();
    EXPECT_NE(st.message().find(c.field), std::string::npos) << "expected '" << c.field << "' in: " << st.message();
  }
  EXPECT_FALSE(ParseConfigJson("{not json").ok());
  EXPECT_FALSE(ParseConfigJson("[1,2]").ok());
}

TEST(Config, JsonRoundTripKeepsUnknownFieldsAndWritesHeadDim) {
  auto c = ParseConfigJson(LlamaJson().dump());
  ASSERT_TRUE(c.ok());
  c->hidden_size = 3072;  // a pruned width
  json out = json::parse(ConfigToJson(*c));
  EXPECT_EQ(out["head_dim"], 128);
  EXPECT_EQ(out["hidden_size"], 3072);
  EXPECT_EQ(out["custom_field"], "kept");
  EXPECT_FALSE(out.contains("topiary"));
  auto again = ParseConfigJson(out.dump());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->rope_scaling.factor, 8.0);
  EXPECT_EQ(CountParams(*again).total(), CountParams(*c).total());
}

TEST(Config, NonIsomorphicLayersAreMarked) {
  auto c = ParseConfigJson(LlamaJson().dump());
  ASSERT_TRUE(c.ok());
  int64_t full = CountParams(*c).total();
  c->has_attention.assign(32, true);
  c->has_attention[3] = false;
  EXPECT_FALSE(c->IsIsomorphic());
  json out = json::parse(ConfigToJson(*c));
  EXPECT_EQ(out["topiary"]["isomorphic"], false);
  auto again = ParseConfigJson(out.dump());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->LayerHasAttention(3));
  // One attention sublayer: q, k, v, o and its norm.
  EXPECT_EQ(full - CountParams(*again).total(), 4096LL * 4096 * 2 + 2LL * 4096 * 1024 + 4096);
}

}  // namespace
}  // namespace topiary::model
