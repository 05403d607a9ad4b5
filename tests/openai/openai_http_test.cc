// The router's OpenAI-compatible HTTP endpoint (xpd-router --http-port)
// against a real local cluster on the built-in default model (DeepSeek-V3
// tokenizer, dummy weights): status codes, JSON shapes, SSE framing, error
// bodies, API keys, the default max_tokens of chat, and cancellation when a
// client disconnects (streaming or not).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/local_cluster.h"

namespace xpd::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kKey[] = "test-key-123";

struct HttpResponse {
  int status = 0;
  std::string headers;  // raw, lower-cased
  std::string body;     // de-chunked
};

// Connects to "host:port"; -1 on failure.
int Connect(const std::string& address) {
  std::vector<std::string> parts = absl::StrSplit(address, ':');
  int port = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) return -1;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, parts[0].c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string RequestText(const std::string& method, const std::string& path, const std::string& body,
                        const std::string& key) {
  std::string text =
      absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
  if (!key.empty()) absl::StrAppend(&text, "Authorization: Bearer ", key, "\r\n");
  if (method == "POST") {
    absl::StrAppend(&text, "Content-Type: application/json\r\nContent-Length: ", body.size(),
                    "\r\n");
  }
  absl::StrAppend(&text, "\r\n", body);
  return text;
}

std::string Dechunk(const std::string& raw) {
  std::string out;
  size_t pos = 0;
  while (pos < raw.size()) {
    const size_t eol = raw.find("\r\n", pos);
    if (eol == std::string::npos) break;
    const size_t size = std::strtoul(raw.substr(pos, eol - pos).c_str(), nullptr, 16);
    if (size == 0) break;
    out += raw.substr(eol + 2, size);
    pos = eol + 2 + size + 2;
  }
  return out;
}

HttpResponse Http(const std::string& address, const std::string& method, const std::string& path,
                  const std::string& body = "", const std::string& key = kKey) {
  HttpResponse response;
  const int fd = Connect(address);
  if (fd < 0) return response;
  const std::string request = RequestText(method, path, body, key);
  (void)!write(fd, request.data(), request.size());
  std::string raw;
  char buffer[65536];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) raw.append(buffer, static_cast<size_t>(n));
  close(fd);
  const size_t split = raw.find("\r\n\r\n");
  if (split == std::string::npos) return response;
  std::string head = raw.substr(0, split);
  for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  (void)absl::SimpleAtoi(head.substr(9, 3), &response.status);
  response.headers = head;
  response.body = raw.substr(split + 4);
  if (absl::StrContains(head, "transfer-encoding: chunked")) response.body = Dechunk(response.body);
  return response;
}

// The JSON payloads of an SSE body; the last one must be "[DONE]".
std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> events;
  for (absl::string_view event : absl::StrSplit(body, "\n\n", absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StartsWith(event, "data: ")) << event;
    events.emplace_back(event.substr(6));
  }
  return events;
}

void ExpectError(const HttpResponse& r, int status, const std::string& param) {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_THAT(r.headers, HasSubstr("content-type: application/json"));
  const json body = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << r.body;
  ASSERT_TRUE(body.contains("error")) << r.body;
  const json& error = body["error"];
  EXPECT_TRUE(error["message"].is_string() && !error["message"].get<std::string>().empty());
  EXPECT_TRUE(error["type"].is_string());
  EXPECT_TRUE(error.contains("code"));
  if (param.empty()) {
    EXPECT_TRUE(error["param"].is_null()) << r.body;
  } else {
    EXPECT_EQ(error["param"], param) << r.body;
  }
}

class OpenAiHttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new std::string(
        (std::filesystem::temp_directory_path() / absl::StrCat("xpd-openai-", getpid())).string());
    const std::string command =
        absl::StrCat(XPD_BINARY_DIR, "/xpd dummy-model --preset default --out ", *model_dir_,
                     " >/dev/null 2>&1");
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    cluster_ =
        new LocalCluster({.model = *model_dir_, .threads = 1, .http = true, .api_key = kKey});
    absl::Status started = cluster_->Start();
    ASSERT_TRUE(started.ok()) << started;
  }
  static void TearDownTestSuite() {
    if (cluster_ != nullptr) {
      EXPECT_THAT(cluster_->Stop(), ::testing::IsEmpty());
    }
    delete cluster_;
    cluster_ = nullptr;
    if (model_dir_ != nullptr) std::filesystem::remove_all(*model_dir_);
    delete model_dir_;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr); }
  const std::string& http() { return cluster_->http(); }

  // Polls (50 ms re-checks, no event to wait on) until the decode rank's KV
  // cache is all free again, up to 20 s; fails the test if it never is.
  static void ExpectDecodeKvFreed() {
    absl::StatusOr<xpd::v1::RankLoad> load;
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      load = cluster_->DecodeLoad(0);
      if (load.ok() && load->kv_blocks_free() == load->kv_blocks_total()) break;
      absl::SleepFor(absl::Milliseconds(50));  // poll interval
    }
    ASSERT_TRUE(load.ok()) << load.status();
    EXPECT_EQ(load->kv_blocks_free(), load->kv_blocks_total());
  }

  static LocalCluster* cluster_;
  static std::string* model_dir_;
};
LocalCluster* OpenAiHttpTest::cluster_ = nullptr;
std::string* OpenAiHttpTest::model_dir_ = nullptr;

TEST_F(OpenAiHttpTest, HealthModelsMetricsAndApiKeys) {
  HttpResponse health = Http(http(), "GET", "/health", "", "");
  EXPECT_EQ(health.status, 200);
  ExpectError(Http(http(), "GET", "/v1/models", "", ""), 401, "");
  ExpectError(Http(http(), "GET", "/v1/models", "", "wrong"), 401, "");
  ExpectError(Http(http(), "GET", "/metrics", "", ""), 401, "");
  ExpectError(Http(http(), "POST", "/v1/completions", R"({"prompt": [1], "max_tokens": 1})", ""),
              401, "");

  HttpResponse models = Http(http(), "GET", "/v1/models");
  ASSERT_EQ(models.status, 200) << models.body;
  const json list = json::parse(models.body);
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], "default");
  EXPECT_EQ(list["data"][0]["object"], "model");

  HttpResponse metrics = Http(http(), "GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.body, HasSubstr("xpd_requests_total"));
  ExpectError(Http(http(), "GET", "/v1/nope"), 404, "");
}

TEST_F(OpenAiHttpTest, ChatCompletion) {
  HttpResponse r = Http(http(), "POST", "/v1/chat/completions", R"({
      "model": "default", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "Hello"}],
      "max_tokens": 4, "temperature": 0, "logprobs": true, "top_logprobs": 2,
      "some_future_field": {"x": 1}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.headers, HasSubstr("content-type: application/json"));
  const json c = json::parse(r.body);
  EXPECT_THAT(c["id"].get<std::string>(), StartsWith("chatcmpl-"));
  EXPECT_EQ(c["object"], "chat.completion");
  EXPECT_EQ(c["model"], "default");
  EXPECT_TRUE(c["created"].is_number_integer());
  ASSERT_EQ(c["choices"].size(), 1u);
  const json& choice = c["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_TRUE(choice["message"]["content"].is_string());
  EXPECT_TRUE(choice["finish_reason"] == "stop" || choice["finish_reason"] == "length");
  const int completion = c["usage"]["completion_tokens"];
  EXPECT_GE(completion, 1);
  EXPECT_LE(completion, 4);
  EXPECT_GT(c["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_EQ(c["usage"]["total_tokens"].get<int>(),
            c["usage"]["prompt_tokens"].get<int>() + completion);
  ASSERT_EQ(choice["logprobs"]["content"].size(), static_cast<size_t>(completion));
  const json& lp = choice["logprobs"]["content"][0];
  EXPECT_TRUE(lp["token"].is_string());
  EXPECT_LE(lp["logprob"].get<double>(), 0.0);
  EXPECT_EQ(lp["top_logprobs"].size(), 2u);
}

TEST_F(OpenAiHttpTest, ChatStreamIsSseEndingInDoneAndMatchesNonStreaming) {
  const std::string request = R"({"messages": [{"role": "user", "content": "Hi"}],
      "max_completion_tokens": 5, "temperature": 0, "stream": %s,
      "stream_options": {"include_usage": true}})";
  HttpResponse whole =
      Http(http(), "POST", "/v1/chat/completions", absl::StrReplaceAll(request, {{"%s", "false"}}));
  ASSERT_EQ(whole.status, 200) << whole.body;
  const json expected = json::parse(whole.body);

  HttpResponse r =
      Http(http(), "POST", "/v1/chat/completions", absl::StrReplaceAll(request, {{"%s", "true"}}));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.headers, HasSubstr("content-type: text/event-stream"));
  std::vector<std::string> events = SseData(r.body);
  ASSERT_GE(events.size(), 4u) << r.body;
  EXPECT_EQ(events.back(), "[DONE]");
  events.pop_back();
  std::string text, finish, id;
  json usage;
  for (const std::string& event : events) {
    const json chunk = json::parse(event);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    if (id.empty()) id = chunk["id"];
    EXPECT_EQ(chunk["id"], id);
    if (!chunk["usage"].is_null()) usage = chunk["usage"];
    for (const json& choice : chunk["choices"]) {
      if (choice["delta"].contains("content")) text += choice["delta"]["content"];
      if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
    }
  }
  EXPECT_EQ(json::parse(events.front())["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(json::parse(events.back())["choices"].empty());  // the usage chunk
  EXPECT_EQ(text, expected["choices"][0]["message"]["content"]);
  EXPECT_EQ(finish, expected["choices"][0]["finish_reason"]);
  EXPECT_EQ(usage, expected["usage"]);
}

TEST_F(OpenAiHttpTest, TextCompletionWithTokenAndTextPrompts) {
  HttpResponse r = Http(http(), "POST", "/v1/completions",
                        R"({"prompt": [5, 6, 7], "max_tokens": 3, "temperature": 0, "seed": 1,
                            "logprobs": 1, "stop": ["\n\n"]})");
  ASSERT_EQ(r.status, 200) << r.body;
  const json c = json::parse(r.body);
  EXPECT_THAT(c["id"].get<std::string>(), StartsWith("cmpl-"));
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_TRUE(c["choices"][0]["text"].is_string());
  EXPECT_EQ(c["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(c["choices"][0]["logprobs"]["tokens"].size(),
            c["usage"]["completion_tokens"].get<size_t>());

  HttpResponse s = Http(http(), "POST", "/v1/completions",
                        R"({"prompt": "Once upon a time", "max_tokens": 3, "stream": true})");
  ASSERT_EQ(s.status, 200) << s.body;
  std::vector<std::string> events = SseData(s.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json last = json::parse(events[events.size() - 2]);
  EXPECT_EQ(last["object"], "text_completion");
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_FALSE(last.contains("usage"));  // only with stream_options.include_usage
}

TEST_F(OpenAiHttpTest, WrongTypesAndUnsupportedValuesAre400) {
  const std::string chat = "/v1/chat/completions";
  const std::string msgs = R"("messages": [{"role": "user", "content": "x"}])";
  ExpectError(Http(http(), "POST", chat, R"({"messages": "hello"})"), 400, "messages");
  ExpectError(Http(http(), "POST", chat, "{}"), 400, "messages");
  ExpectError(Http(http(), "POST", chat, absl::StrCat("{", msgs, R"(, "max_tokens": "5"})")), 400,
              "max_tokens");
  ExpectError(Http(http(), "POST", chat, absl::StrCat("{", msgs, R"(, "stream": "yes"})")), 400,
              "stream");
  ExpectError(Http(http(), "POST", chat, absl::StrCat("{", msgs, R"(, "temperature": "0"})")), 400,
              "temperature");
  ExpectError(Http(http(), "POST", chat, absl::StrCat("{", msgs, R"(, "stop": 7})")), 400, "stop");
  HttpResponse n2 = Http(http(), "POST", chat, absl::StrCat("{", msgs, R"(, "n": 2})"));
  ExpectError(n2, 400, "n");
  EXPECT_THAT(n2.body, HasSubstr("only n=1 is supported"));
  EXPECT_THAT(n2.body, HasSubstr("invalid_request_error"));
  ExpectError(Http(http(), "POST", "/v1/completions", R"({"prompt": 5})"), 400, "prompt");
  ExpectError(Http(http(), "POST", "/v1/completions", "{not json"), 400, "");
  // Rejected by the Generation service itself (one place for validation).
  ExpectError(
      Http(http(), "POST", "/v1/completions", R"({"prompt": [1], "max_tokens": 100000000})"), 400,
      "");
  ExpectError(Http(http(), "POST", "/v1/completions", R"({"prompt": [1], "model": "nope"})"), 404,
              "model");
  ExpectError(Http(http(), "GET", "/v1/completions"), 405, "");
}

// Metric value of the first line starting with `prefix` (-1 when absent).
double Metric(const std::string& text, const std::string& prefix) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, prefix)) continue;
    double value = -1;
    (void)absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value);
    return value;
  }
  return -1;
}

TEST_F(OpenAiHttpTest, DisconnectedStreamingClientCancelsItsRequest) {
  const int fd = Connect(http());
  ASSERT_GE(fd, 0);
  const std::string request =
      RequestText("POST", "/v1/completions",
                  R"({"prompt": [1, 2, 3], "max_tokens": 4000, "stream": true})", kKey);
  ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  char buffer[4096];
  std::string got;
  while (!absl::StrContains(got, "data: ")) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    ASSERT_GT(n, 0);
    got.append(buffer, static_cast<size_t>(n));
  }
  EXPECT_THAT(got, HasSubstr("200 OK"));
  close(fd);
  // 4000 tokens take far longer than this: the router must see a cancellation.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  std::string metrics;
  while (absl::Now() < deadline) {
    metrics = Http(http(), "GET", "/metrics").body;
    if (Metric(metrics, "xpd_requests_running") == 0 &&
        absl::StrContains(metrics, R"(="cancelled")")) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(Metric(metrics, "xpd_requests_running"), 0) << metrics;
  EXPECT_THAT(metrics, HasSubstr(R"(="cancelled")"));
}

// Sum of the values of the lines starting with `prefix` and containing `part`.
double MetricSum(const std::string& text, const std::string& prefix, const std::string& part) {
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, prefix) || !absl::StrContains(line, part)) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) sum += value;
  }
  return sum;
}

// Polls the router's metrics until `done` holds or `timeout` passes; the last text.
std::string WaitForMetrics(const std::string& http, absl::Duration timeout,
                           const std::function<bool(const std::string&)>& done) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string metrics;
  while (true) {
    metrics = Http(http, "GET", "/metrics").body;
    if (done(metrics) || absl::Now() >= deadline) return metrics;
    absl::SleepFor(absl::Milliseconds(50));  // poll interval
  }
}

TEST_F(OpenAiHttpTest, DisconnectedNonStreamingClientCancelsItsRequest) {
  auto cancelled = [](const std::string& m) {
    return MetricSum(m, "xpd_requests_total{", R"(outcome="cancelled")");
  };
  auto running = [](const std::string& m) { return Metric(m, "xpd_requests_running"); };
  const double cancelled_before = cancelled(Http(http(), "GET", "/metrics").body);

  // A non-streaming request far longer than the test: nothing is written to
  // the client until it ends, so only watching the socket can notice the close.
  const int fd = Connect(http());
  ASSERT_GE(fd, 0);
  const std::string request =
      RequestText("POST", "/v1/completions",
                  R"({"prompt": [1, 2, 3], "max_tokens": 20000, "temperature": 0})", kKey);
  ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string metrics = WaitForMetrics(http(), absl::Seconds(30), [&](const std::string& m) {
    return running(m) == 1 && MetricSum(m, "xpd_generation_tokens_total{", "") > 0;
  });
  ASSERT_EQ(running(metrics), 1) << metrics;  // it is generating
  close(fd);

  metrics = WaitForMetrics(http(), absl::Seconds(20), [&](const std::string& m) {
    return running(m) == 0 && cancelled(m) == cancelled_before + 1;
  });
  EXPECT_EQ(running(metrics), 0) << metrics;
  EXPECT_EQ(cancelled(metrics), cancelled_before + 1) << metrics;
  // ... and its KV is free again on the decode rank.
  ExpectDecodeKvFreed();
}

TEST_F(OpenAiHttpTest, ChatWithoutMaxTokensMayUseTheRestOfTheServedContext) {
  // The served context: the model's, capped by the decode rank's KV cache.
  const json models = json::parse(Http(http(), "GET", "/v1/models").body);
  const int64_t context = models["data"][0]["context_length"];
  absl::StatusOr<xpd::v1::RankLoad> load = cluster_->DecodeLoad(0);
  ASSERT_TRUE(load.ok()) << load.status();
  EXPECT_EQ(context, std::min<int64_t>(163840, load->kv_blocks_total() * 64));

  // A streaming chat without max_tokens is admitted (not 400/429): read its
  // first token, then hang up, which cancels it.
  const int fd = Connect(http());
  ASSERT_GE(fd, 0);
  const std::string request = RequestText(
      "POST", "/v1/chat/completions",
      R"({"messages": [{"role": "user", "content": "Hi"}], "stream": true, "temperature": 0})",
      kKey);
  ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  char buffer[4096];
  std::string got;
  while (!absl::StrContains(got, "\"content\":\"") || !absl::StrContains(got, "\n\n")) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    ASSERT_GT(n, 0) << got;
    got.append(buffer, static_cast<size_t>(n));
  }
  EXPECT_THAT(got, HasSubstr("200 OK"));
  close(fd);

  // A chat filling the context is refused up front, naming the messages.
  std::string words;  // one token or more each
  for (int64_t i = 0; i < context + 10; ++i) absl::StrAppend(&words, " x", i % 10);
  ExpectError(Http(http(), "POST", "/v1/chat/completions",
                   json{{"messages", {{{"role", "user"}, {"content", words}}}}}.dump()),
              400, "messages");
  // The cancelled stream held the whole KV cache: wait until it is free again.
  ExpectDecodeKvFreed();
}

}  // namespace
}  // namespace xpd::testing
