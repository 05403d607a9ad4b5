// KV transfer benchmark (not a test): GB/s of GrpcKvTransport -> KvTransferService
// over loopback, against raw TCP loopback throughput measured in the same run,
// for payloads shaped like the `small` preset's latent KV (12 layers x 288
// floats per token).
//   kv_transfer_bench [--seconds 3] [--rounds 6] [--tokens 512,2048,8192]
//                     [--layers 12] [--latent-dim 288] [--chunk-bytes 1048576]
// Each transport gets --seconds per payload size, split into --rounds that
// alternate with the other's. Prints a table and one JSON line. Both receivers fold every received
// byte into a checksum, so neither side can skip the data and the ratio compares the transports,
// not the receivers' work.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "common/base/command_flags.h"
#include "common/base/status_macros.h"
#include "common/rpc/grpc_server.h"
#include "common/transport/grpc_kv_transport.h"
#include "common/transport/kv_chunking.h"
#include "nlohmann/json.hpp"

namespace xpd::transport {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kRawWriteBytes = int64_t{1} << 20;  // the raw client's write size

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Folds bytes into a wrapping 32-bit sum of 32-bit words: cheap enough
// (vectorized) not to dominate either receiver, but it reads every byte.
uint32_t Checksum(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t sum = 0;
  size_t i = 0;
  for (; i + 4 <= bytes; i += 4) {
    uint32_t word;
    std::memcpy(&word, p + i, 4);
    sum += word;
  }
  for (; i < bytes; ++i) sum += p[i];
  return sum;
}

// A decode rank that accepts every row and keeps only a checksum.
class DiscardSink : public KvSink {
 public:
  absl::Status WriteKv(const std::string& /*request_id*/, int64_t /*first_token*/,
                       int64_t /*count*/, int32_t /*num_layers*/, int32_t /*latent_dim*/,
                       std::span<const float> rows) override {
    checksum_.fetch_add(Checksum(rows.data(), rows.size_bytes()), std::memory_order_relaxed);
    return absl::OkStatus();
  }
  absl::Status CompleteKv(const std::string& /*request_id*/, int64_t /*num_tokens*/) override {
    completed_.fetch_add(1, std::memory_order_relaxed);
    return absl::OkStatus();
  }
  uint32_t checksum() const { return checksum_.load(); }
  int64_t completed() const { return completed_.load(); }

 private:
  std::atomic<uint32_t> checksum_{0};
  std::atomic<int64_t> completed_{0};
};

struct Measurement {
  int64_t transfers = 0;
  int64_t bytes = 0;
  double seconds = 0;
  double gbps() const { return bytes / seconds / 1e9; }
};

// Adds transfers by `send` (one whole transfer each) to `m` until `seconds`
// have passed, at least one.
template <typename Send>
absl::Status Repeat(double seconds, int64_t bytes_per_transfer, Send send, Measurement* m) {
  const Clock::time_point start = Clock::now();
  do {
    XPD_RETURN_IF_ERROR(send());
    ++m->transfers;
    m->bytes += bytes_per_transfer;
  } while (SecondsSince(start) < seconds);
  m->seconds += SecondsSince(start);
  return absl::OkStatus();
}

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

bool ReadFull(int fd, void* data, size_t bytes) {
  auto* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = read(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return true;
}

bool WriteFull(int fd, const void* data, size_t bytes) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return true;
}

// Raw TCP on loopback with the same per-transfer shape as PushKv: the client
// announces the size, streams the bytes in 1 MiB writes, and waits for an
// 8-byte acknowledgement (as GrpcKvTransport::Send waits for Finish). One
// connection is kept for the whole run, as the gRPC channel is.
class RawTcpLink {
 public:
  ~RawTcpLink() {
    if (client_ >= 0) close(client_);  // EOF ends the server loop
    // Wakes a server still in accept() (the client never connected).
    if (listener_ >= 0) shutdown(listener_, SHUT_RDWR);
    if (server_thread_.joinable()) server_thread_.join();
    if (listener_ >= 0) close(listener_);
  }

  absl::Status Start() {
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    if (listener_ < 0) return Errno("socket");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    if (bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      return Errno("bind 127.0.0.1:0");
    }
    if (listen(listener_, 1) != 0) return Errno("listen");
    socklen_t length = sizeof(address);
    if (getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      return Errno("getsockname");
    }
    server_thread_ = std::thread([this] { Serve(); });
    client_ = socket(AF_INET, SOCK_STREAM, 0);
    if (client_ < 0) return Errno("socket");
    if (connect(client_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      return Errno("connect");
    }
    // The 8-byte header and ack must not wait for Nagle's timer.
    const int one = 1;
    setsockopt(client_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return absl::OkStatus();
  }

  absl::Status Send(const char* data, int64_t bytes) {
    if (!WriteFull(client_, &bytes, sizeof(bytes))) return Errno("write header");
    for (int64_t sent = 0; sent < bytes;) {
      const int64_t n = std::min(kRawWriteBytes, bytes - sent);
      if (!WriteFull(client_, data + sent, n)) return Errno("write");
      sent += n;
    }
    int64_t ack = 0;
    if (!ReadFull(client_, &ack, sizeof(ack)) || ack != bytes) {
      return absl::InternalError("raw TCP: bad or missing ack");
    }
    return absl::OkStatus();
  }

  uint32_t checksum() const { return checksum_.load(); }

 private:
  void Serve() {
    const int fd = accept(listener_, nullptr, nullptr);
    if (fd < 0) return;
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::vector<char> buffer(kRawWriteBytes);
    int64_t bytes = 0;
    while (ReadFull(fd, &bytes, sizeof(bytes))) {
      uint32_t sum = 0;
      for (int64_t left = bytes; left > 0;) {
        const ssize_t n = read(fd, buffer.data(), std::min<int64_t>(left, buffer.size()));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          close(fd);
          return;
        }
        sum += Checksum(buffer.data(), static_cast<size_t>(n));
        left -= n;
      }
      checksum_.fetch_add(sum, std::memory_order_relaxed);
      if (!WriteFull(fd, &bytes, sizeof(bytes))) break;
    }
    close(fd);
  }

  int listener_ = -1;
  int client_ = -1;
  std::thread server_thread_;
  std::atomic<uint32_t> checksum_{0};
};

struct Row {
  int64_t tokens;
  int64_t bytes;
  Measurement grpc, raw;
};

absl::Status Run(const std::vector<std::string>& args) {
  XPD_ASSIGN_OR_RETURN(
      base::CommandFlags flags,
      base::CommandFlags::Parse(
          args, {"seconds", "rounds", "tokens", "layers", "latent-dim", "chunk-bytes"}, {}));
  XPD_ASSIGN_OR_RETURN(double seconds, flags.GetDouble("seconds", 3.0));
  XPD_ASSIGN_OR_RETURN(int64_t rounds, flags.GetInt("rounds", 6));
  XPD_ASSIGN_OR_RETURN(int64_t layers, flags.GetInt("layers", 12));
  XPD_ASSIGN_OR_RETURN(int64_t latent_dim, flags.GetInt("latent-dim", 288));
  XPD_ASSIGN_OR_RETURN(int64_t chunk_bytes, flags.GetInt("chunk-bytes", kDefaultKvChunkBytes));
  std::vector<int64_t> token_counts = {512, 2048, 8192};
  if (flags.Has("tokens")) {
    XPD_ASSIGN_OR_RETURN(token_counts, flags.GetIntList("tokens"));
  }
  if (seconds <= 0 || rounds < 1 || layers < 1 || latent_dim < 1 || chunk_bytes < 1 ||
      token_counts.empty()) {
    return absl::InvalidArgumentError(
        "--seconds, --rounds, --layers, --latent-dim, --chunk-bytes and --tokens must be "
        "positive");
  }

  DiscardSink sink;
  KvTransferService service(&sink);
  XPD_ASSIGN_OR_RETURN(std::unique_ptr<rpc::GrpcServer> server,
                       rpc::GrpcServer::Start({.services = {&service}}));
  GrpcKvTransport transport({.chunk_bytes = chunk_bytes});
  RawTcpLink raw;
  XPD_RETURN_IF_ERROR(raw.Start());

  std::vector<Row> rows;
  int64_t request = 0;
  for (const int64_t tokens : token_counts) {
    if (tokens < 1) return absl::InvalidArgumentError("--tokens: every count must be >= 1");
    // Distinct values, so a checksum of zeros cannot hide a short transfer.
    std::vector<float> data(layers * tokens * latent_dim);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i % 4093) * 0.25f;
    const KvPayload payload{.num_layers = static_cast<int32_t>(layers),
                            .latent_dim = static_cast<int32_t>(latent_dim),
                            .num_tokens = tokens,
                            .data = data};
    const int64_t bytes = static_cast<int64_t>(data.size() * sizeof(float));
    Row row{.tokens = tokens, .bytes = bytes};
    auto grpc_send = [&]() -> absl::Status {
      const std::string id = absl::StrCat("bench-", request++);
      absl::StatusOr<int64_t> acked =
          transport.Send(server->address(), id, payload, absl::Now() + absl::Seconds(60));
      if (!acked.ok()) return acked.status();
      if (*acked != bytes) {
        return absl::InternalError(absl::StrCat("gRPC acked ", *acked, " of ", bytes, " bytes"));
      }
      return absl::OkStatus();
    };
    auto raw_send = [&] { return raw.Send(reinterpret_cast<const char*>(data.data()), bytes); };
    // One untimed transfer each (connection set-up, first-touch of buffers),
    // then alternating rounds, so load changes on a shared machine hit both
    // transports alike and the ratio stays meaningful.
    XPD_RETURN_IF_ERROR(grpc_send());
    XPD_RETURN_IF_ERROR(raw_send());
    for (int64_t round = 0; round < rounds; ++round) {
      XPD_RETURN_IF_ERROR(Repeat(seconds / rounds, bytes, grpc_send, &row.grpc));
      XPD_RETURN_IF_ERROR(Repeat(seconds / rounds, bytes, raw_send, &row.raw));
    }
    rows.push_back(row);
  }
  server->Shutdown();

  std::cout << absl::StrFormat(
      "KV transfer over loopback: %d layers x %d floats/token, %d-byte "
      "gRPC chunks, %.1f s per transport and size in %d alternating rounds\n",
      layers, latent_dim, chunk_bytes, seconds, rounds);
  std::cout << absl::StrFormat("%8s %10s %10s %10s %10s %10s %8s\n", "tokens", "MiB", "gRPC GB/s",
                               "raw GB/s", "gRPC/raw", "gRPC xfers", "raw xfers");
  nlohmann::json results = nlohmann::json::array();
  for (const Row& row : rows) {
    const double ratio = row.grpc.gbps() / row.raw.gbps();
    std::cout << absl::StrFormat("%8d %10.2f %10.3f %10.3f %10.3f %10d %8d\n", row.tokens,
                                 row.bytes / double(1 << 20), row.grpc.gbps(), row.raw.gbps(),
                                 ratio, row.grpc.transfers, row.raw.transfers);
    results.push_back({{"tokens", row.tokens},
                       {"bytes", row.bytes},
                       {"grpc_gb_per_s", row.grpc.gbps()},
                       {"raw_tcp_gb_per_s", row.raw.gbps()},
                       {"grpc_over_raw", ratio},
                       {"grpc_transfers", row.grpc.transfers},
                       {"raw_transfers", row.raw.transfers}});
  }
  const nlohmann::json out = {{"bench", "kv_transfer"},
                              {"layers", layers},
                              {"latent_dim", latent_dim},
                              {"chunk_bytes", chunk_bytes},
                              {"seconds", seconds},
                              {"rounds", rounds},
                              {"results", results},
                              {"grpc_transfers_completed", sink.completed()},
                              {"grpc_checksum", sink.checksum()},
                              {"raw_checksum", raw.checksum()}};
  std::cout << out.dump() << std::endl;
  return absl::OkStatus();
}

}  // namespace
}  // namespace xpd::transport

int main(int argc, char** argv) {
  return xpd::base::ExitStatus("kv_transfer_bench", xpd::transport::Run({argv + 1, argv + argc}));
}
