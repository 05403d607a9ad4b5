#include "common/metrics/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "prometheus/text_serializer.h"

namespace xpd::metrics {
namespace {

using ::testing::HasSubstr;

std::string Serialize(prometheus::Registry& registry) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry.Collect());
  return out.str();
}

// A minimal HTTP/1.0 GET; the socket has a receive timeout so a broken
// server fails the test instead of hanging it.
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "socket failed";
  timeval timeout{.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) response.append(buffer, n);
    }
  }
  close(fd);
  return response;
}

TEST(LatencyBucketsTest, CoverOneMillisecondToTwoMinutesIncreasing) {
  const std::vector<double>& buckets = LatencyBuckets();
  ASSERT_GE(buckets.size(), 18u);
  ASSERT_LE(buckets.size(), 24u);
  EXPECT_DOUBLE_EQ(buckets.front(), 0.001);
  EXPECT_DOUBLE_EQ(buckets.back(), 120.0);
  for (size_t i = 1; i < buckets.size(); ++i) {
    EXPECT_GT(buckets[i], buckets[i - 1]);
    EXPECT_LE(buckets[i] / buckets[i - 1], 3.0) << "gap at " << buckets[i];
  }
}

// The one test that runs a real scrape (the Exposer destructor is slow
// once it has served one).
TEST(MetricsServerTest, ServesRegistryWithConstantLabels) {
  auto server = MetricsServer::Start({.role = "decode", .rank = "0", .model = "tiny"});
  ASSERT_TRUE(server.ok()) << server.status();
  MetricsServer& metrics = **server;
  EXPECT_THAT(metrics.address(), HasSubstr("127.0.0.1:"));
  const int port = std::stoi(metrics.address().substr(metrics.address().rfind(':') + 1));
  ASSERT_GT(port, 0);
  EXPECT_EQ(metrics.labels(),
            (prometheus::Labels{{"role", "decode"}, {"rank", "0"}, {"model", "tiny"}}));

  auto& requests = prometheus::BuildCounter()
                       .Name("xpd_requests_total")
                       .Help("Requests by outcome.")
                       .Labels(metrics.labels())
                       .Register(metrics.registry());
  requests.Add({{"outcome", "ok"}}).Increment(3);
  auto& latency = prometheus::BuildHistogram()
                      .Name("xpd_e2e_latency_seconds")
                      .Help("End-to-end latency.")
                      .Labels(metrics.labels())
                      .Register(metrics.registry());
  latency.Add({}, LatencyBuckets()).Observe(0.2);

  const std::string text = Serialize(metrics.registry());
  EXPECT_THAT(text, HasSubstr("# TYPE xpd_requests_total counter"));
  EXPECT_THAT(
      text, HasSubstr(R"(xpd_requests_total{model="tiny",rank="0",role="decode",outcome="ok"} 3)"));
  EXPECT_THAT(text, HasSubstr(R"(xpd_e2e_latency_seconds_bucket{model="tiny",rank="0",)"
                              R"(role="decode",le="0.25"} 1)"));
  EXPECT_THAT(text, HasSubstr(R"(le="0.15"} 0)"));
  EXPECT_THAT(text, HasSubstr("xpd_e2e_latency_seconds_count"));

  const std::string scraped = HttpGet(port, "/metrics");
  EXPECT_THAT(scraped, HasSubstr("200 OK"));
  EXPECT_THAT(
      scraped,
      HasSubstr(R"(xpd_requests_total{model="tiny",rank="0",role="decode",outcome="ok"} 3)"));
  EXPECT_THAT(scraped, HasSubstr("xpd_e2e_latency_seconds_bucket"));
}

TEST(MetricsServerTest, BusyPortIsUnavailable) {
  // Hold a listening socket on a free port.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);

  auto server = MetricsServer::Start({.port = port});
  close(fd);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(server.status().message(), HasSubstr("127.0.0.1:" + std::to_string(port)));
}

TEST(MetricsServerTest, RejectsBadPort) {
  EXPECT_EQ(MetricsServer::Start({.port = -1}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace xpd::metrics
