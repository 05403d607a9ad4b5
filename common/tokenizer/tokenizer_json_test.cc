// Loading tokenizer.json: a small valid file, and one test per kind of
// malformed file, each checking that the error names what is wrong.
#include <functional>
#include <string>

#include "common/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace xpd::tokenizer {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

// A byte-level BPE tokenizer with a five-token vocabulary ("Ġ" is the
// space byte) and one added token.
Json ValidTokenizer() {
  return Json::parse(R"({
    "version": "1.0",
    "added_tokens": [{"id": 5, "content": "<s>", "special": true, "normalized": false}],
    "normalizer": null,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": " ?\\p{L}+|\\s+"}, "behavior": "Isolated",
       "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]},
    "post_processor": {"type": "ByteLevel", "trim_offsets": false},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "dropout": null, "unk_token": null,
              "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4},
              "merges": ["a b", ["Ġ", "ab"]]}
  })");
}

absl::Status LoadError(const Json& json) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::LoadFromJson(json.dump(), "t.json");
  return t.ok() ? absl::OkStatus() : t.status();
}

std::string Message(const Json& json) { return std::string(LoadError(json).message()); }

Json With(const std::function<void(Json&)>& edit) {
  Json j = ValidTokenizer();
  edit(j);
  return j;
}

TEST(TokenizerJsonTest, SmallValidTokenizerLoadsAndEncodes) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t =
      Tokenizer::LoadFromJson(ValidTokenizer().dump(), "t.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(*(*t)->Encode("ab ab<s>ba"), ElementsAre(2, 4, 5, 1, 0));
  EXPECT_EQ((*t)->Decode({2, 4, 5, 1, 0}, false), "ab ab<s>ba");
  EXPECT_EQ((*t)->Decode({2, 4, 5, 1, 0}, true), "ab abba");
  EXPECT_EQ((*t)->id_space(), 6);
  // Bytes with no vocabulary token are dropped, as Hugging Face does with no unk_token.
  EXPECT_THAT(*(*t)->Encode("abc"), ElementsAre(2));
}

TEST(TokenizerJsonTest, BadJson) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::LoadFromJson("{\"model\": ", "t.json");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()),
              AllOf(HasSubstr("t.json: invalid JSON"), HasSubstr("parse")));
  EXPECT_THAT(std::string(Tokenizer::LoadFromJson("", "t.json").status().message()),
              HasSubstr("invalid JSON"));
  EXPECT_THAT(std::string(Tokenizer::LoadFromJson("[1, 2]", "t.json").status().message()),
              HasSubstr("top level: expected an object, got array"));
}

TEST(TokenizerJsonTest, MissingModel) {
  EXPECT_THAT(Message(With([](Json& j) { j.erase("model"); })),
              HasSubstr("t.json: model: missing"));
  EXPECT_THAT(Message(With([](Json& j) { j["model"].erase("merges"); })),
              HasSubstr("model.merges: missing"));
  EXPECT_THAT(Message(With([](Json& j) { j["model"].erase("vocab"); })),
              HasSubstr("model.vocab: missing"));
}

TEST(TokenizerJsonTest, WrongTypes) {
  const std::vector<std::pair<std::function<void(Json&)>, std::string>> cases = {
      {[](Json& j) { j["model"] = "BPE"; }, "model: expected an object, got string"},
      {[](Json& j) { j["model"]["vocab"] = Json::array(); },
       "model.vocab: expected an object, got array"},
      {[](Json& j) { j["model"]["vocab"]["a"] = "zero"; },
       "model.vocab['a']: expected an integer token id, got string"},
      {[](Json& j) { j["model"]["vocab"]["a"] = 1.5; },
       "model.vocab['a']: expected an integer token id, got number"},
      {[](Json& j) { j["model"]["vocab"]["a"] = -1; },
       "model.vocab['a']: token id -1 is out of range"},
      {[](Json& j) { j["model"]["merges"] = "a b"; },
       "model.merges: expected an array, got string"},
      {[](Json& j) { j["model"]["merges"][0] = 7; },
       "model.merges[0]: expected a string \"a b\" or a pair"},
      {[](Json& j) { j["model"]["merges"][0] = "ab"; },
       "model.merges[0]: 'ab' is not two tokens separated by one space"},
      {[](Json& j) { j["added_tokens"] = Json::object(); },
       "added_tokens: expected an array, got object"},
      {[](Json& j) { j["added_tokens"][0]["content"] = 3; },
       "added_tokens[0].content: expected a string, got number"},
      {[](Json& j) { j["added_tokens"][0].erase("id"); }, "added_tokens[0].id: missing"},
      {[](Json& j) { j["added_tokens"][0]["special"] = "yes"; },
       "added_tokens[0].special: expected a boolean, got string"},
      {[](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["invert"] = 1; },
       "pre_tokenizer.pretokenizers[0].invert: expected a boolean, got number"},
      {[](Json& j) { j["pre_tokenizer"]["pretokenizers"] = Json::object(); },
       "pre_tokenizer.pretokenizers: expected an array, got object"},
      {[](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = "x"; },
       "pre_tokenizer.pretokenizers[0].pattern: expected an object, got string"},
      {[](Json& j) { j["decoder"] = Json::array(); }, "decoder: expected an object, got array"},
  };
  for (const auto& [edit, message] : cases) {
    const absl::Status status = LoadError(With(edit));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << message;
    EXPECT_THAT(std::string(status.message()), HasSubstr(message));
  }
}

TEST(TokenizerJsonTest, MergeReferringToUnknownToken) {
  EXPECT_THAT(Message(With([](Json& j) { j["model"]["merges"].push_back("a zz"); })),
              HasSubstr("t.json: model.merges[2]: 'a zz' refers to unknown token 'zz'"));
  EXPECT_THAT(Message(With([](Json& j) {
                j["model"]["merges"][0] = {"q", "b"};
              })),
              HasSubstr("model.merges[0]: 'q b' refers to unknown token 'q'"));
  EXPECT_THAT(Message(With([](Json& j) { j["model"]["merges"].push_back("b a"); })),
              HasSubstr("model.merges[2]: 'b a' makes 'ba', which is not in model.vocab"));
}

TEST(TokenizerJsonTest, UnsupportedComponents) {
  const std::vector<std::pair<std::function<void(Json&)>, std::string>> cases = {
      {[](Json& j) {
         j["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Whitespace"}};
       },
       "pre_tokenizer.pretokenizers[0].type: pre-tokenizer 'Whitespace' is not supported"},
      {[](Json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}};
       },
       "pre_tokenizer.type: pre-tokenizer 'Metaspace' is not supported"},
      {[](Json& j) { j.erase("pre_tokenizer"); }, "pre_tokenizer: missing"},
      {[](Json& j) { j["pre_tokenizer"] = j["pre_tokenizer"]["pretokenizers"][0]; },
       "pre_tokenizer: has no ByteLevel step"},
      {[](Json& j) {
         auto& steps = j["pre_tokenizer"]["pretokenizers"];
         std::swap(steps[0], steps[1]);
       },
       "pre_tokenizer.pretokenizers[1]: a Split step after ByteLevel is not supported"},
      {[](Json& j) { j["model"]["type"] = "WordPiece"; },
       "model.type: model 'WordPiece' is not supported (only BPE)"},
      {[](Json& j) { j["model"]["dropout"] = 0.1; }, "model.dropout: BPE dropout is not supported"},
      {[](Json& j) { j["model"]["byte_fallback"] = true; }, "model.byte_fallback"},
      {[](Json& j) { j["model"]["continuing_subword_prefix"] = "##"; },
       "model.continuing_subword_prefix"},
      {[](Json& j) {
         j["normalizer"] = {{"type", "NFC"}};
       },
       "normalizer: normalizer type 'NFC' is not supported"},
      {[](Json& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       },
       "decoder.type: decoder 'WordPiece' is not supported"},
      {[](Json& j) { j.erase("decoder"); }, "decoder: missing"},
      {[](Json& j) {
         j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "(a"}};
       },
       "pre_tokenizer.pretokenizers[0].pattern.Regex: PCRE2 cannot compile"},
      {[](Json& j) {
         j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "[a-z&&b]"}};
       },
       "pre_tokenizer.pretokenizers[0].pattern.Regex: regex offset 4: class intersection"},
      {[](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways"; },
       "pre_tokenizer.pretokenizers[0].behavior: unknown split behavior 'Sideways'"},
      {[](Json& j) { j["model"]["unk_token"] = "<unk>"; },
       "model.unk_token: '<unk>' is not in model.vocab"},
  };
  for (const auto& [edit, message] : cases) {
    const absl::Status status = LoadError(With(edit));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << message;
    EXPECT_THAT(std::string(status.message()), HasSubstr(message));
  }
}

TEST(TokenizerJsonTest, InconsistentIds) {
  EXPECT_THAT(Message(With([](Json& j) { j["model"]["vocab"]["b"] = 0; })),
              HasSubstr("model.vocab: id 0 is used by both"));
  EXPECT_THAT(Message(With([](Json& j) {
                j["added_tokens"].push_back({{"id", 5}, {"content", "</s>"}});
              })),
              HasSubstr("added_tokens[1].id: id 5 is already used by added_tokens[0]"));
  EXPECT_THAT(Message(With([](Json& j) { j["model"]["vocab"]["a"] = 1 << 30; })),
              HasSubstr("model.vocab['a']: token id 1073741824 is out of range"));
}

TEST(TokenizerJsonTest, MissingFileNamesThePath) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load("/nonexistent/dir/tokenizer.json");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(t.status().message()),
              HasSubstr("/nonexistent/dir/tokenizer.json: cannot open"));
}

TEST(TokenizerJsonTest, LoadsFromFileOrDirectory) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> from_file =
      Tokenizer::Load("tests/fixtures/tokenizer/tokenizer.json");
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ((*from_file)->id_space(), 128815);
}

}  // namespace
}  // namespace xpd::tokenizer
