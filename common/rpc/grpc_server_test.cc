#include "common/rpc/grpc_server.h"

#include <chrono>
#include <future>
#include <string>

#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "xpd/v1/cluster.grpc.pb.h"

namespace xpd::rpc {
namespace {

using ::testing::HasSubstr;

constexpr auto kTimeout = std::chrono::seconds(10);

std::chrono::system_clock::time_point Deadline() {
  return std::chrono::system_clock::now() + kTimeout;
}

grpc::ByteBuffer ToByteBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromByteBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// grpc.health.v1.Health/Check with a hand-encoded HealthCheckRequest
// {service = ""}: the health protos are not part of ours.
absl::StatusOr<std::string> HealthCheck(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  grpc::ByteBuffer request = ToByteBuffer(std::string());
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  grpc::Status status = done.get_future().get();
  if (!status.ok()) return absl::InternalError(status.error_message());
  return FromByteBuffer(response);
}

// One ServerReflectionInfo exchange asking list_services; returns the raw
// response bytes (the service names appear verbatim in them).
absl::StatusOr<std::string> ListServicesViaReflection(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto step = [&cq](void* expected) {
    void* tag = nullptr;
    bool ok = false;
    auto result = cq.AsyncNext(&tag, &ok, Deadline());
    return result == grpc::CompletionQueue::GOT_EVENT && tag == expected && ok;
  };
  int tags[5];
  call->StartCall(&tags[0]);
  if (!step(&tags[0])) return absl::InternalError("start");
  // ServerReflectionRequest { list_services (field 7) = "" }.
  call->Write(ToByteBuffer(std::string("\x3a\x00", 2)), &tags[1]);
  if (!step(&tags[1])) return absl::InternalError("write");
  grpc::ByteBuffer response;
  call->Read(&response, &tags[2]);
  if (!step(&tags[2])) return absl::InternalError("read");
  call->WritesDone(&tags[3]);
  if (!step(&tags[3])) return absl::InternalError("writes done");
  grpc::Status status;
  call->Finish(&status, &tags[4]);
  if (!step(&tags[4])) return absl::InternalError("finish");
  if (!status.ok()) return absl::InternalError(status.error_message());
  return FromByteBuffer(response);
}

// HealthCheckResponse {status: SERVING (1)} / {status: NOT_SERVING (2)}.
const std::string kServing("\x08\x01", 2);
const std::string kNotServing("\x08\x02", 2);

TEST(GrpcServerTest, ServesHealthReflectionAndServices) {
  xpd::v1::Controller::Service controller;  // every method UNIMPLEMENTED
  auto server = GrpcServer::Start({.services = {&controller}});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = (*server)->address();
  EXPECT_THAT(address, HasSubstr("127.0.0.1:"));
  EXPECT_NE(address, "127.0.0.1:0");

  auto health = HealthCheck(address);
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, kServing);

  (*server)->SetServing(false);
  health = HealthCheck(address);
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, kNotServing);
  (*server)->SetServing(true);

  auto services = ListServicesViaReflection(address);
  ASSERT_TRUE(services.ok()) << services.status();
  EXPECT_THAT(*services, HasSubstr("xpd.v1.Controller"));
  EXPECT_THAT(*services, HasSubstr("grpc.health.v1.Health"));

  // The registered service answers (its default handlers say UNIMPLEMENTED).
  auto stub = xpd::v1::Controller::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(Deadline());
  xpd::v1::ListRanksResponse response;
  EXPECT_EQ(stub->ListRanks(&context, {}, &response).error_code(), grpc::StatusCode::UNIMPLEMENTED);

  (*server)->Shutdown();
  (*server)->Shutdown();  // idempotent
}

TEST(GrpcServerTest, BusyPortIsUnavailableNamingTheAddress) {
  auto first = GrpcServer::Start({});
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string address = (*first)->address();
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  auto second = GrpcServer::Start({.port = port});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(address));
}

TEST(GrpcServerTest, RejectsBadPort) {
  EXPECT_EQ(GrpcServer::Start({.port = 70000}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace xpd::rpc
