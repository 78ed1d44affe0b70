// Test tool: dump_logits MODEL_DIR TOKENS.safetensors OUT.safetensors [bf16]
// Loads MODEL_DIR in fp32 (or bf16 weights and compute with `bf16`), runs
// Forward on the (B, T) "tokens" tensor (stored as F32) and writes the
// (B, T, V) logits, widened to fp32, as "logits". Used by the
// independent Python reference check (tests/reference/check_logits.py).
#include <torch/torch.h>

#include <cstdio>
#include <string>

#include "worker/model/checkpoint.h"
#include "worker/model/safetensors.h"

int main(int argc, char** argv) {
  using namespace topiary::model;
  const bool bf16 = argc == 5 && std::string(argv[4]) == "bf16";
  if (argc != 4 && !bf16) {
    std::fprintf(stderr, "usage: dump_logits MODEL_DIR TOKENS.safetensors OUT.safetensors [bf16]\n");
    return 2;
  }
  at::set_num_threads(2);
  auto model = LoadCheckpoint(argv[1], bf16 ? at::kBFloat16 : at::kFloat);
  if (!model.ok()) {
    std::fprintf(stderr, "dump_logits: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  auto tokens_file = SafetensorsFile::Open(argv[2]);
  if (!tokens_file.ok() || (*tokens_file)->Find("tokens") == nullptr) {
    std::fprintf(stderr, "dump_logits: cannot read tokens from %s\n", argv[2]);
    return 1;
  }
  const TensorInfo* info = (*tokens_file)->Find("tokens");
  at::Tensor tokens =
      at::from_blob(const_cast<uint8_t*>((*tokens_file)->Data(*info)), info->shape, at::kFloat).to(at::kLong);
  torch::NoGradGuard no_grad;
  at::Tensor logits = Forward(*model, tokens).to(at::kFloat).contiguous();
  auto writer = SafetensorsWriter::Create(argv[3], {{"logits", DType::kF32, logits.sizes().vec()}});
  if (!writer.ok() || !(*writer)->WriteNext(logits.data_ptr(), logits.numel() * 4).ok() || !(*writer)->Finish().ok()) {
    std::fprintf(stderr, "dump_logits: cannot write %s\n", argv[3]);
    return 1;
  }
  return 0;
}
