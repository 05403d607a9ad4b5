// Starts a gRPC server the way every xpd service runs one: bound to
// host:port (port 0 picks a free port), with the standard health service
// (grpc.health.v1) and server reflection, so standard tools can call it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace xpd::rpc {

struct GrpcServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;
  std::vector<grpc::Service*> services;  // not owned; must outlive the server
  int max_message_bytes = 64 << 20;
};

class GrpcServer {
 public:
  // UNAVAILABLE naming host:port when it cannot bind.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const GrpcServerOptions& options);
  ~GrpcServer();  // shuts down (deadline 2 s for in-flight calls)

  const std::string& address() const { return address_; }  // "host:port" actually bound
  // Serving status of the overall server ("") in the health service.
  void SetServing(bool serving);
  void Shutdown();

 private:
  GrpcServer() = default;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

}  // namespace xpd::rpc
