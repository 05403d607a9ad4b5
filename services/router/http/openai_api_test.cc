#include "services/router/http/openai_api.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace xpd::router::http {
namespace {

using nlohmann::json;

ApiError ParseError(Endpoint endpoint, const std::string& body) {
  ParsedRequest parsed;
  ApiError error;
  EXPECT_FALSE(ParseRequest(endpoint, body, &parsed, &error)) << body;
  EXPECT_EQ(error.http_status, 400);
  return error;
}

TEST(OpenAiApiTest, ChatRequestMapsToChat) {
  ParsedRequest parsed;
  ApiError error;
  ASSERT_TRUE(ParseRequest(Endpoint::kChatCompletions, R"({
      "model": "default", "messages": [{"role": "developer", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
      "max_completion_tokens": 7, "temperature": 0, "top_p": 0.5, "seed": 3,
      "stop": "x", "stream": true, "stream_options": {"include_usage": true},
      "logprobs": true, "top_logprobs": 2, "n": 1, "frequency_penalty": 0, "unknown": [1]})",
                           &parsed, &error))
      << error.message;
  const auto& r = parsed.request;
  ASSERT_TRUE(r.has_chat());
  EXPECT_TRUE(r.chat().add_generation_prompt());
  ASSERT_EQ(r.chat().messages_size(), 2);
  EXPECT_EQ(r.chat().messages(0).role(), "system");
  EXPECT_EQ(r.chat().messages(1).content(), "hi");
  EXPECT_EQ(r.model(), "default");
  EXPECT_EQ(r.sampling().max_tokens(), 7);
  EXPECT_EQ(r.sampling().temperature(), 0);
  EXPECT_FLOAT_EQ(r.sampling().top_p(), 0.5f);
  EXPECT_EQ(r.sampling().seed(), 3u);
  ASSERT_EQ(r.sampling().stop_size(), 1);
  EXPECT_TRUE(parsed.stream);
  EXPECT_TRUE(parsed.include_usage);
  EXPECT_TRUE(r.sampling().logprobs());
  EXPECT_EQ(r.sampling().top_logprobs(), 2);
}

TEST(OpenAiApiTest, CompletionPrompts) {
  ParsedRequest parsed;
  ApiError error;
  ASSERT_TRUE(ParseRequest(Endpoint::kCompletions, R"({"prompt": [1, 2, 3]})", &parsed, &error));
  EXPECT_EQ(parsed.request.tokens().ids_size(), 3);
  EXPECT_EQ(parsed.request.sampling().max_tokens(), kDefaultCompletionMaxTokens);
  ParsedRequest text;
  ASSERT_TRUE(ParseRequest(Endpoint::kCompletions, R"({"prompt": ["hello"], "logprobs": 2,
      "stop": ["a", "b"]})",
                           &text, &error));
  EXPECT_EQ(text.request.text(), "hello");
  EXPECT_TRUE(text.request.sampling().logprobs());
  EXPECT_EQ(text.request.sampling().top_logprobs(), 2);
  EXPECT_EQ(text.request.sampling().stop_size(), 2);
}

TEST(OpenAiApiTest, ChatWithoutMaxTokensUsesTheRestOfTheContext) {
  ParsedRequest parsed;
  ApiError error;
  ASSERT_TRUE(ParseRequest(Endpoint::kChatCompletions,
                           R"({"messages": [{"role": "user", "content": "hi"}]})", &parsed,
                           &error));
  EXPECT_TRUE(parsed.max_tokens_from_context);
  EXPECT_EQ(parsed.request.sampling().max_tokens(), 0);  // the server fills it in
  ASSERT_TRUE(SetMaxTokensFromContext(4096, 10, &parsed, &error));
  EXPECT_EQ(parsed.request.sampling().max_tokens(), 4086);
  EXPECT_FALSE(parsed.max_tokens_from_context);

  // A prompt that fills the context: 400 about the messages.
  ParsedRequest full;
  ASSERT_TRUE(ParseRequest(Endpoint::kChatCompletions,
                           R"({"messages": [{"role": "user", "content": "hi"}]})", &full, &error));
  EXPECT_FALSE(SetMaxTokensFromContext(4096, 4096, &full, &error));
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.param, "messages");

  // Either explicit field wins; completions keep OpenAI's default of 16.
  ParsedRequest given;
  ASSERT_TRUE(ParseRequest(Endpoint::kChatCompletions,
                           R"({"messages": [{"role": "user", "content": "hi"}],
                               "max_completion_tokens": 9})",
                           &given, &error));
  EXPECT_FALSE(given.max_tokens_from_context);
  EXPECT_EQ(given.request.sampling().max_tokens(), 9);
  ParsedRequest completion;
  ASSERT_TRUE(ParseRequest(Endpoint::kCompletions, R"({"prompt": "x"})", &completion, &error));
  EXPECT_FALSE(completion.max_tokens_from_context);
  EXPECT_EQ(completion.request.sampling().max_tokens(), kDefaultCompletionMaxTokens);
}

TEST(OpenAiApiTest, WrongTypesAre400WithParam) {
  EXPECT_EQ(ParseError(Endpoint::kChatCompletions, R"({"messages": "hi"})").param, "messages");
  EXPECT_EQ(ParseError(Endpoint::kChatCompletions,
                       R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"})")
                .param,
            "max_tokens");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": 5})").param, "prompt");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "temperature": "hot"})").param,
            "temperature");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "stream": 1})").param, "stream");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "stop": 3})").param, "stop");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "n": 2})").param, "n");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": ["a", "b"]})").param, "prompt");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, "not json").param, "");
  const json body = ErrorBody(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "n": 2})"));
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "n");
  EXPECT_TRUE(body["error"]["code"].is_null());
  EXPECT_NE(body["error"]["message"].get<std::string>().find("n=1"), std::string::npos);
}

TEST(OpenAiApiTest, StatusMapping) {
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kFailedPrecondition), 400);
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFromCode(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(ErrorFromStatus(absl::ResourceExhaustedError("busy")).type, "rate_limit_error");
}

TEST(OpenAiApiTest, StreamingChunksAndFinal) {
  ParsedRequest parsed;
  ApiError error;
  ASSERT_TRUE(ParseRequest(Endpoint::kChatCompletions,
                           R"({"messages": [{"role": "user", "content": "x"}], "stream": true,
                               "stream_options": {"include_usage": true}})",
                           &parsed, &error));
  CompletionBuilder builder(parsed, "default", 42);
  TokenText text = [](int32_t id) { return absl::StrCat("t", id); };
  xpd::v1::GenerateResponse first;
  first.set_request_id("r1");
  first.add_token_ids(5);
  first.set_text("He");
  auto chunks = builder.Chunks(first, text);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0]["id"], "chatcmpl-r1");
  EXPECT_EQ(chunks[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(chunks[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(chunks[1]["choices"][0]["delta"]["content"], "He");
  EXPECT_TRUE(chunks[1]["usage"].is_null());
  xpd::v1::GenerateResponse last;
  last.set_request_id("r1");
  last.set_finish_reason(xpd::v1::FINISH_REASON_LENGTH);
  last.mutable_usage()->set_prompt_tokens(3);
  last.mutable_usage()->set_completion_tokens(1);
  chunks = builder.Chunks(last, text);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0]["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(chunks[1]["choices"].empty());
  EXPECT_EQ(chunks[1]["usage"]["total_tokens"], 4);

  CompletionBuilder whole(parsed, "default", 42);
  whole.Add(first);
  whole.Add(last);
  const json final = whole.Final(text);
  EXPECT_EQ(final["object"], "chat.completion");
  EXPECT_EQ(final["model"], "default");
  EXPECT_EQ(final["choices"][0]["message"]["content"], "He");
  EXPECT_EQ(final["usage"]["completion_tokens"], 1);
}

}  // namespace
}  // namespace xpd::router::http
