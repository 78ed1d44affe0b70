// AdamW with fp32 master weights (Loshchilov & Hutter): the model may hold
// bf16 weights for compute while the optimizer keeps fp32 copies, first and
// second moments, and writes the rounded result back after each step.
// Weight decay applies to matrices only (not norms or biases).
// Thread-compatible; the parameters must not be resized while in use.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace topiary::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

class AdamW {
 public:
  // `params` point at the model's weights, which must have requires_grad set.
  AdamW(std::vector<std::pair<std::string, at::Tensor*>> params, AdamWOptions options);

  // Applies one update with learning rate `lr` using each weight's .grad()
  // multiplied by `grad_scale` (gradient clipping folds in here, saving a
  // pass over the gradients). Weights with no gradient are skipped. One fused
  // pass per tensor reads g, m, v, master and writes m, v, master, weight.
  void Step(double lr, double grad_scale = 1.0);
  int64_t steps() const { return step_; }
  // Bytes of optimizer state (master copies and moments).
  int64_t StateBytes() const;

 private:
  struct Slot {
    std::string name;
    at::Tensor* param;
    at::Tensor master;  // fp32; aliases *param when it is fp32
    at::Tensor m, v;    // fp32
    bool decay;
  };
  std::vector<Slot> slots_;
  AdamWOptions options_;
  int64_t step_ = 0;
};

// The global L2 norm of the gradients (fp32/bf16 grads, fp64 accumulation).
double GradNorm(const std::vector<at::Tensor*>& params);

// The factor that scales gradients of norm `norm` to at most max_norm
// (1 when max_norm <= 0 or the norm is already small enough).
double ClipScale(double norm, double max_norm);

// Scales all gradients so that their global L2 norm is at most max_norm
// (no-op if max_norm <= 0). Returns the norm before clipping.
double ClipGradNorm(const std::vector<at::Tensor*>& params, double max_norm);

// Linear warm-up to `peak` over `warmup` steps, then cosine decay to `min`
// at `total` steps (and `min` after).
double CosineLr(int64_t step, int64_t total, int64_t warmup, double peak, double min);

}  // namespace topiary::train
