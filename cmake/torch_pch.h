// The precompiled header shared by libtorch-heavy targets (see
// cmake/TopiaryTargets.cmake). Only stable third-party headers belong here.
#pragma once
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
