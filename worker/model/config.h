// ModelConfig: the shape and hyper-parameters of a Llama-family decoder, as
// Hugging Face's config.json defines them for LlamaForCausalLM,
// MistralForCausalLM and Qwen2ForCausalLM. Torch-free; plain value type.
//
// Dimension alphabet used across worker/: B batch, T time (sequence),
// C channels (hidden_size), NH query heads, G KV groups (key/value heads),
// R = NH/G query heads per group, HS head size, FF MLP width, L layers,
// V vocabulary.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace topiary::model {

enum class Family { kLlama, kMistral, kQwen2 };

struct RopeScaling {
  // kDynamic: dynamic NTK scaling, whose rope base grows once a sequence is
  // longer than max_position_embeddings (Hugging Face's "dynamic").
  enum class Type { kNone, kLinear, kLlama3, kDynamic };
  Type type = Type::kNone;
  double factor = 1.0;                              // linear, dynamic and llama3: 8.0
  double low_freq_factor = 1.0;                     // llama3: 1.0
  double high_freq_factor = 4.0;                    // llama3: 4.0
  int64_t original_max_position_embeddings = 8192;  // llama3: 8192
};

struct ModelConfig {
  Family family = Family::kLlama;
  int64_t hidden_size = 4096;         // C
  int64_t intermediate_size = 14336;  // FF
  int64_t num_attention_heads = 32;   // NH
  int64_t num_key_value_heads = 8;    // G
  int64_t head_dim = 128;             // HS (explicit, or C / NH)
  int64_t num_hidden_layers = 32;     // L
  int64_t vocab_size = 128256;        // V
  double rms_norm_eps = 1e-5;
  double rope_theta = 500000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 131072;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2: true; Llama: attention_bias
  bool o_bias = false;    // Llama attention_bias also biases o_proj
  bool mlp_bias = false;  // Llama mlp_bias
  std::string torch_dtype = "bfloat16";
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;

  // Topiary extension for non-isomorphic outputs (written under "topiary" in
  // config.json): per layer, whether its attention / MLP sublayer exists.
  // Empty means every layer has both.
  std::vector<bool> has_attention;
  std::vector<bool> has_mlp;

  // transformers 5's per-layer attention kinds ("full_attention", ...), one
  // entry per layer, kept in step when layers are dropped or replaced
  // (KeepLayers). Empty when config.json has none.
  std::vector<std::string> layer_types;

  // The config.json this came from, so that fields Topiary does not model are
  // written back unchanged. Empty for configs built in code.
  std::string original_json;

  int64_t q_per_group() const { return num_attention_heads / num_key_value_heads; }  // R
  bool LayerHasAttention(int64_t layer) const { return has_attention.empty() || has_attention[layer]; }
  bool LayerHasMlp(int64_t layer) const { return has_mlp.empty() || has_mlp[layer]; }
  // True when this is a plain architecture any Llama-compatible runtime loads.
  bool IsIsomorphic() const;
};

// Parses config.json text. Refuses unknown architectures and missing or
// contradictory fields with INVALID_ARGUMENT naming the field.
absl::StatusOr<ModelConfig> ParseConfigJson(absl::string_view json_text);

// Reads and validates <dir>/config.json (at most 16 MiB).
absl::StatusOr<ModelConfig> LoadConfig(const std::string& dir);

// `config` with only the given layers (original indices, in order): the
// per-layer lists follow and num_hidden_layers is their count.
ModelConfig KeepLayers(const ModelConfig& config, const std::vector<int64_t>& layers);

// Checks internal consistency (positive sizes, heads divisible by groups,
// per-layer lists of the right length).
absl::Status ValidateConfig(const ModelConfig& config);

// Serializes to config.json text with head_dim always explicit; fields of
// original_json that Topiary does not model are preserved.
std::string ConfigToJson(const ModelConfig& config);

absl::string_view FamilyArchitecture(Family family);  // "LlamaForCausalLM"
absl::string_view FamilyModelType(Family family);     // "llama"

// Parameter counts, computed analytically from the shape.
struct ParamCounts {
  int64_t embedding = 0;  // embed_tokens
  int64_t lm_head = 0;    // 0 when tied
  int64_t attention = 0;  // q, k, v, o (+ biases), all layers
  int64_t mlp = 0;        // gate, up, down (+ biases), all layers
  int64_t norms = 0;      // every RMSNorm weight
  int64_t total() const { return embedding + lm_head + attention + mlp + norms; }
  int64_t non_embedding() const { return attention + mlp + norms; }
};
ParamCounts CountParams(const ModelConfig& config);

}  // namespace topiary::model
