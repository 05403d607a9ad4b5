#include "common/rpc/grpc_server.h"

#include <chrono>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace xpd::rpc {
namespace {

constexpr auto kShutdownGrace = std::chrono::seconds(2);

// Process-wide gRPC switches; both apply to servers built afterwards and
// are not thread-safe, so they run exactly once.
void InitGrpcServerPluginsOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  });
}

// "host:port", bracketing IPv6 literals.
std::string JoinHostPort(const std::string& host, int port) {
  const bool ipv6 = host.find(':') != std::string::npos && host.front() != '[';
  return ipv6 ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(const GrpcServerOptions& options) {
  if (options.host.empty()) return absl::InvalidArgumentError("grpc server: empty host");
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("grpc server: port out of range: ", options.port));
  }
  InitGrpcServerPluginsOnce();

  const std::string requested = JoinHostPort(options.host, options.port);
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(requested, grpc::InsecureServerCredentials(), &bound_port);
  // Without this gRPC sets SO_REUSEPORT and two servers could share a port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  for (grpc::Service* service : options.services) {
    if (service != nullptr) builder.RegisterService(service);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    if (server != nullptr) server->Shutdown();
    return absl::UnavailableError(absl::StrCat("grpc server: cannot bind ", requested));
  }

  std::unique_ptr<GrpcServer> result(new GrpcServer());
  result->server_ = std::move(server);
  result->address_ = JoinHostPort(options.host, bound_port);
  result->SetServing(true);
  return result;
}

GrpcServer::~GrpcServer() { Shutdown(); }

void GrpcServer::SetServing(bool serving) {
  if (server_ == nullptr) return;
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus("", serving);
  }
}

void GrpcServer::Shutdown() {
  if (server_ == nullptr) return;
  server_->Shutdown(std::chrono::system_clock::now() + kShutdownGrace);
  server_->Wait();
  server_.reset();
}

}  // namespace xpd::rpc
