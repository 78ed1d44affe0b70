// The model card (README.md) an export writes beside the weights: where the
// model came from (teacher, job, stages), its shape and size, the tokens it
// was trained on, and the evaluation the job measured. Pure function of
// the assignment and the earlier stages' results.
#pragma once

#include <string>

#include "topiary/v1/worker_service.pb.h"
#include "worker/job/layout.h"
#include "worker/model/config.h"

namespace topiary::job {

std::string ModelCard(const v1::Assignment& assignment, const Lineage& lineage, const model::ModelConfig& config,
                      const std::string& dtype);

}  // namespace topiary::job
