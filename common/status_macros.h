// Status propagation macros. Debian's Abseil (20220623) ships neither
// RETURN_IF_ERROR nor ASSIGN_OR_RETURN, so Topiary defines its own two here.
//
//   RETURN_IF_ERROR(DoThing());              // returns the status if not OK
//   ASSIGN_OR_RETURN(auto file, Open(path));  // unwraps a StatusOr or returns
//
// Both work in functions returning absl::Status or absl::StatusOr<T>.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TOPIARY_STATUS_CONCAT_INNER(a, b) a##b
#define TOPIARY_STATUS_CONCAT(a, b) TOPIARY_STATUS_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status topiary_status_ = (expr);           \
    if (!topiary_status_.ok()) return topiary_status_; \
  } while (0)

#define TOPIARY_ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, rexpr) \
  TOPIARY_ASSIGN_OR_RETURN_IMPL(TOPIARY_STATUS_CONCAT(topiary_statusor_, __LINE__), lhs, rexpr)
