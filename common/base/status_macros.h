// Early-return helpers for absl::Status / absl::StatusOr (Abseil 20220623
// ships none).
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define XPD_STATUS_CONCAT_INNER(a, b) a##b
#define XPD_STATUS_CONCAT(a, b) XPD_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define XPD_RETURN_IF_ERROR(expr)                               \
  do {                                                          \
    if (::absl::Status xpd_status = (expr); !xpd_status.ok()) { \
      return xpd_status;                                        \
    }                                                           \
  } while (false)

// XPD_ASSIGN_OR_RETURN(auto x, MakeX()); declares/assigns x or returns the error.
#define XPD_ASSIGN_OR_RETURN(lhs, expr) \
  XPD_ASSIGN_OR_RETURN_IMPL(XPD_STATUS_CONCAT(xpd_statusor_, __LINE__), lhs, expr)
#define XPD_ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr)     \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()
