// The machine's GEMM peak in FLOP/s, measured (docs/design.md, "How speed is judged"): the
// denominator of MFU in training logs and of every "of peak" figure in bench/.
#pragma once

#include <ATen/core/TensorBody.h>

#include <cstdint>

namespace topiary::train {

// Square matrices of size n in `dtype`, multiplied the way the model's
// GEMMs are (bf16 through oneDNN, or through fp32 where the CPU has no
// native bf16 GEMM: model::NativeBf16Gemm; fp32 through BLAS): the best of
// three medians of five timed products after a warm-up. Takes about half
// a second at n = 2048 on a 2-core CPU.
double MeasureGemmPeak(at::ScalarType dtype, int64_t n = 2048);

}  // namespace topiary::train
