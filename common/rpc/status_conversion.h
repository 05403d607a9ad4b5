// absl::Status <-> grpc::Status. Both use the canonical gRPC codes, so the
// conversion keeps the code and the message in either direction.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace xpd::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status ToAbslStatus(const grpc::Status& status);

}  // namespace xpd::rpc
