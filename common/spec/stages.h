// Facts about a job's stages that the coordinator and the workers must agree
// on: each stage's name (its output directory, <storage>/jobs/<job>/<name>),
// which stages run on every rank of the job, how many tasks a stage fans out
// to, and the vocabulary of depth metrics a spec may name. Pure functions;
// thread-safe.
#pragma once

#include <string>
#include <vector>

#include "topiary/v1/job.pb.h"

namespace topiary::spec {

// teacher_correction, importance, prune, search (a prune with a search),
// distill, streamline, evaluate, export.
const char* StageKindName(const v1::StageSpec& stage);

// One name per stage, in order: the kind's name, and "<kind>-<n>" for the
// n-th (n >= 2) stage of the same kind.
std::vector<std::string> StageNames(const v1::JobSpec& spec);

// Stages that run as one task over resources.ranks ranks (importance,
// teacher correction, distillation, streamline); the others run on one rank.
bool IsMultiRank(const v1::StageSpec& stage);

// Probe tasks of a search stage (candidates, default 8); 1 for other stages.
int TaskCount(const v1::StageSpec& stage);

inline constexpr int kDefaultCandidates = 8;
inline constexpr int kMaxCandidates = 64;

// Every depth metric name the workers know (worker/compress's registry;
// a worker test checks that the two lists agree).
const std::vector<std::string>& DepthMetricNames();

}  // namespace topiary::spec
