#include "worker/train/lora.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace topiary::train {
namespace {

using Member = at::Tensor model::BlockWeights::*;

struct Target {
  const char* name;
  Member member;
  bool attention;
};

constexpr Target kTargets[] = {
    {"q", &model::BlockWeights::q_proj, true},        {"k", &model::BlockWeights::k_proj, true},
    {"v", &model::BlockWeights::v_proj, true},        {"o", &model::BlockWeights::o_proj, true},
    {"gate", &model::BlockWeights::gate_proj, false}, {"up", &model::BlockWeights::up_proj, false},
    {"down", &model::BlockWeights::down_proj, false},
};

}  // namespace

absl::StatusOr<std::unique_ptr<LoraAdapter>> LoraAdapter::Create(const model::LlamaModel& base, const LoraOptions& o,
                                                                 uint64_t seed) {
  if (o.rank <= 0) return absl::InvalidArgumentError(absl::StrCat("lora rank: ", o.rank, " must be positive"));
  if (!(o.alpha > 0)) return absl::InvalidArgumentError("lora alpha: must be positive");
  if (o.targets.empty()) return absl::InvalidArgumentError("lora targets: empty");
  std::vector<const Target*> chosen;
  for (const std::string& t : o.targets) {
    const Target* found = nullptr;
    for (const Target& k : kTargets) {
      if (t == k.name) found = &k;
    }
    if (found == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("lora targets: unknown projection '", t, "' (want q, k, v, o, gate, up, down)"));
    }
    if (std::find(chosen.begin(), chosen.end(), found) != chosen.end()) {
      return absl::InvalidArgumentError(absl::StrCat("lora targets: '", t, "' given twice"));
    }
    chosen.push_back(found);
  }
  torch::NoGradGuard no_grad;
  std::unique_ptr<LoraAdapter> a(new LoraAdapter);
  a->scale_ = o.alpha / static_cast<double>(o.rank);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const model::ModelConfig& c = base.config;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (const Target* t : chosen) {
      if (t->attention ? !c.LayerHasAttention(l) : !c.LayerHasMlp(l)) continue;
      const at::Tensor& w = base.layers[l].*(t->member);  // (out, in)
      const int64_t out = w.size(0), in = w.size(1);
      if (o.rank > std::min(out, in)) {
        return absl::InvalidArgumentError(absl::StrCat("lora rank: ", o.rank, " exceeds the ", t->name,
                                                       " projection's smaller dimension ", std::min(out, in)));
      }
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      Factor f;
      f.layer = l;
      f.member = t->member;
      f.name = absl::StrCat("lora.", l, ".", t->name);
      f.a = at::empty({o.rank, in}, at::kFloat).uniform_(-bound, bound, gen).to(w.scalar_type());
      f.b = at::zeros({out, o.rank}, w.options());
      a->factors_.push_back(std::move(f));
    }
  }
  return a;
}

NamedTensors LoraAdapter::Parameters() {
  NamedTensors out;
  for (Factor& f : factors_) {
    out.emplace_back(f.name + ".A", &f.a);
    out.emplace_back(f.name + ".B", &f.b);
  }
  return out;
}

int64_t LoraAdapter::ParameterCount() const {
  int64_t n = 0;
  for (const Factor& f : factors_) n += f.a.numel() + f.b.numel();
  return n;
}

model::LlamaModel LoraAdapter::Apply(const model::LlamaModel& base) const {
  model::LlamaModel m = base;  // shares every tensor; targets are replaced below
  for (const Factor& f : factors_) {
    const at::Tensor& w = base.layers[f.layer].*(f.member);
    m.layers[f.layer].*(f.member) = w + at::matmul(f.b, f.a) * scale_;  // (out, in)
  }
  return m;
}

model::LlamaModel LoraAdapter::Merge(const model::LlamaModel& base) const {
  torch::NoGradGuard no_grad;
  return Apply(base);
}

Objective::Parts LoraObjective::ForwardBackward(const model::LlamaModel& student, const data::Batch& batch,
                                                double grad_scale) {
  return inner_->ForwardBackward(adapter_->Apply(student), batch, grad_scale);
}

NamedTensors LoraObjective::Parameters() {
  NamedTensors out = adapter_->Parameters();
  for (auto& p : inner_->Parameters()) out.push_back(p);
  return out;
}

}  // namespace topiary::train
