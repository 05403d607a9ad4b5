// The DeepSeek-V3 tokenizer against every reference vector in
// tests/fixtures/tokenizer (computed with Hugging Face tokenizers).
#include <fstream>
#include <string>
#include <vector>

#include "common/tokenizer/streaming_detokenizer.h"
#include "common/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace xpd::tokenizer {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr char kDir[] = "tests/fixtures/tokenizer";

std::vector<nlohmann::json> ReadJsonl(const std::string& name) {
  std::ifstream in(std::string(kDir) + "/" + name);
  std::vector<nlohmann::json> records;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) records.push_back(nlohmann::json::parse(line));
  }
  return records;
}

class TokenizerVectorsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<Tokenizer>> loaded = Tokenizer::Load(kDir);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    tokenizer_ = loaded->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  static const Tokenizer& tok() { return *tokenizer_; }
  static Tokenizer* tokenizer_;
};
Tokenizer* TokenizerVectorsTest::tokenizer_ = nullptr;

TEST_F(TokenizerVectorsTest, IdSpaceAndSpecialIds) {
  EXPECT_EQ(tok().id_space(), 128815);
  EXPECT_EQ(tok().TokenId("<｜begin▁of▁sentence｜>"), 0);
  EXPECT_EQ(tok().TokenId("<｜end▁of▁sentence｜>"), 1);
  EXPECT_EQ(tok().TokenId("<｜User｜>"), 128803);
  EXPECT_EQ(tok().TokenId("<|EOT|>"), 128805);
  EXPECT_EQ(tok().TokenId("Ġthe"), 270);  // a vocabulary token, in the byte alphabet
  EXPECT_EQ(tok().TokenId("no such token"), std::nullopt);
}

TEST_F(TokenizerVectorsTest, EncodeMatchesEveryVector) {
  const std::vector<nlohmann::json> records = ReadJsonl("encode.jsonl");
  ASSERT_EQ(records.size(), 254u);
  for (const nlohmann::json& r : records) {
    const std::string text = r["text"];
    SCOPED_TRACE(r["tag"].get<std::string>() + ": " + r["text"].dump());
    absl::StatusOr<std::vector<int32_t>> ids = tok().Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_THAT(*ids, ElementsAreArray(r["ids"].get<std::vector<int32_t>>()));
    // Decoding the ids gives the text back exactly.
    EXPECT_EQ(tok().Decode(*ids, false), text);
  }
}

TEST_F(TokenizerVectorsTest, PreTokenizeMatchesEveryVector) {
  const std::vector<nlohmann::json> records = ReadJsonl("pretokenize.jsonl");
  ASSERT_EQ(records.size(), 254u);
  for (const nlohmann::json& r : records) {
    SCOPED_TRACE(r["tag"].get<std::string>() + ": " + r["text"].dump());
    absl::StatusOr<std::vector<std::string>> pieces =
        tok().PreTokenize(r["text"].get<std::string>());
    ASSERT_TRUE(pieces.ok()) << pieces.status();
    EXPECT_THAT(*pieces, ElementsAreArray(r["pieces"].get<std::vector<std::string>>()));
  }
}

TEST_F(TokenizerVectorsTest, ChatVectorIdsEncodeFromText) {
  const std::vector<nlohmann::json> records = ReadJsonl("chat.jsonl");
  ASSERT_EQ(records.size(), 12u);
  for (const nlohmann::json& r : records) {
    SCOPED_TRACE(r["tag"].get<std::string>());
    absl::StatusOr<std::vector<int32_t>> ids = tok().Encode(r["text"].get<std::string>());
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_THAT(*ids, ElementsAreArray(r["ids"].get<std::vector<int32_t>>()));
  }
}

TEST_F(TokenizerVectorsTest, DecodeMatchesEveryVector) {
  const std::vector<nlohmann::json> records = ReadJsonl("decode.jsonl");
  ASSERT_EQ(records.size(), 44u);
  int skip_modes[2] = {0, 0};
  for (const nlohmann::json& r : records) {
    SCOPED_TRACE(r.dump());
    const bool skip = r["skip_special_tokens"];
    ++skip_modes[skip];
    EXPECT_EQ(tok().Decode(r["ids"].get<std::vector<int32_t>>(), skip), r["text"]);
  }
  EXPECT_GT(skip_modes[0], 0);
  EXPECT_GT(skip_modes[1], 0);
}

TEST_F(TokenizerVectorsTest, StreamingDecodeMatchesEveryVector) {
  int streamed = 0;
  for (const nlohmann::json& r : ReadJsonl("decode.jsonl")) {
    if (!r.contains("stream")) continue;
    ++streamed;
    SCOPED_TRACE(r.dump());
    StreamingDetokenizer stream(tok(), r["skip_special_tokens"].get<bool>());
    const std::vector<int32_t> ids = r["ids"];
    const std::vector<std::string> want = r["stream"];
    ASSERT_EQ(ids.size(), want.size());
    std::string joined;
    for (size_t i = 0; i < ids.size(); ++i) {
      const std::string got = stream.Add(ids[i]);
      EXPECT_EQ(got, want[i]) << "after ids[" << i << "] = " << ids[i];
      joined += got;
    }
    EXPECT_EQ(stream.Flush(), r["stream_flush"].get<std::string>());
    EXPECT_EQ(stream.Flush(), "");  // nothing left after a flush
  }
  EXPECT_EQ(streamed, 27);
}

TEST_F(TokenizerVectorsTest, SpecialTokenTextAsPlainTextIsNotInjected) {
  const std::string text = "<｜User｜>hi<｜end▁of▁sentence｜><|EOT|>";
  absl::StatusOr<std::vector<int32_t>> recognized = tok().Encode(text);
  ASSERT_TRUE(recognized.ok());
  EXPECT_THAT(*recognized, ::testing::Contains(128803));
  EXPECT_THAT(*recognized, ::testing::Contains(1));

  absl::StatusOr<std::vector<int32_t>> plain =
      tok().Encode(text, {.special_tokens = SpecialTokenText::kAsPlainText});
  ASSERT_TRUE(plain.ok());
  for (int32_t id : *plain) {
    EXPECT_TRUE(id > 2 && id < 128000) << "added token " << id << " in plain-text encoding";
  }
  EXPECT_GT(plain->size(), 10u);
  EXPECT_EQ(tok().Decode(*plain, /*skip_special_tokens=*/true), text);  // nothing to skip

  // Text without added tokens encodes the same either way.
  const std::string ordinary = "The quick brown fox, 12345 times.";
  EXPECT_EQ(*tok().Encode(ordinary),
            *tok().Encode(ordinary, {.special_tokens = SpecialTokenText::kAsPlainText}));
}

TEST_F(TokenizerVectorsTest, InvalidUtf8IsRejectedWithOffset) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string("abc\xff", 4), "offset 3"},
      {std::string("ok \xc3", 4), "offset 3"},               // truncated at the end
      {std::string("\xed\xa0\x80", 3), "offset 0"},          // a surrogate
      {std::string("x\xc0\xaf", 3), "offset 1"},             // overlong
      {std::string("\xe4\xb8\xad\xe6\x96", 5), "offset 3"},  // 中 then a cut character
  };
  for (const auto& [text, offset] : cases) {
    absl::StatusOr<std::vector<int32_t>> ids = tok().Encode(text);
    ASSERT_FALSE(ids.ok());
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ids.status().message(), HasSubstr(offset));
    EXPECT_THAT(ids.status().message(), HasSubstr("not valid UTF-8"));
    EXPECT_FALSE(tok().PreTokenize(text).ok());
  }
  // NUL bytes are valid UTF-8 and round-trip.
  const std::string nul("a\0b", 3);
  EXPECT_EQ(tok().Decode(*tok().Encode(nul), false), nul);
}

TEST_F(TokenizerVectorsTest, TokenBytesAndUnknownIds) {
  EXPECT_EQ(tok().TokenBytes(270, false), " the");
  EXPECT_EQ(tok().TokenBytes(0, false), "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(tok().TokenBytes(0, true), "");
  EXPECT_EQ(tok().TokenBytes(128803, true), "<｜User｜>");  // added, not special
  EXPECT_EQ(tok().TokenBytes(128815, false), std::nullopt);
  EXPECT_EQ(tok().TokenBytes(-1, false), std::nullopt);
  EXPECT_EQ(tok().Decode({19923, 129279, -5, 14}, false), "Hello,");
}

TEST_F(TokenizerVectorsTest, LongInputsStayLinear) {
  // One piece per run: these exercise the large-piece BPE path and long
  // regex matches (PCRE2 limits must not be hit).
  for (const std::string unit : {"a", " ", "\n", "中", "😀", "1", "!"}) {
    std::string text;
    while (text.size() < 300000) text += unit;
    absl::StatusOr<std::vector<int32_t>> ids = tok().Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(tok().Decode(*ids, false), text) << unit;
  }
}

}  // namespace
}  // namespace xpd::tokenizer
