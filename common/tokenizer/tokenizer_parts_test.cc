// Unit tests of the tokenizer's parts: UTF-8 handling, the byte alphabet,
// regex translation, split behaviors, added-token options and BPE merging.
#include <random>
#include <string>
#include <vector>

#include "common/tokenizer/added_tokens.h"
#include "common/tokenizer/bpe.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/pre_tokenizer.h"
#include "common/tokenizer/regex.h"
#include "common/tokenizer/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace xpd::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kFffd[] = "\xEF\xBF\xBD";

TEST(Utf8Test, FindInvalid) {
  EXPECT_EQ(utf8::FindInvalid("plain ascii"), std::nullopt);
  EXPECT_EQ(utf8::FindInvalid("héllo 中文 😀"), std::nullopt);
  EXPECT_EQ(utf8::FindInvalid("ab\x80"), 2u);
  EXPECT_EQ(utf8::FindInvalid("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(utf8::FindInvalid("a\xe0\x80\x80"), 1u);     // overlong
  EXPECT_EQ(utf8::FindInvalid("a\xf0\x9f\x98"), 1u);     // truncated
}

TEST(Utf8Test, LossyOneReplacementPerMaximalSubpart) {
  // The WHATWG / Unicode "best practice" examples.
  const std::string f = kFffd;
  EXPECT_EQ(utf8::DecodeLossy("a\xf1\x80\x80z"), "a" + f + "z");    // one subpart
  EXPECT_EQ(utf8::DecodeLossy("\xe0\x80\xbf"), f + f + f);          // E0 80: 80 not allowed
  EXPECT_EQ(utf8::DecodeLossy("\xed\xa0\x80"), f + f + f);          // surrogate
  EXPECT_EQ(utf8::DecodeLossy("\xf4\x90\x80\x80"), f + f + f + f);  // > U+10FFFF
  EXPECT_EQ(utf8::DecodeLossy("\xc0\xaf"), f + f);                  // C0 never valid
  EXPECT_EQ(utf8::DecodeLossy("\xe4\xb8"), f);                      // truncated at end
  EXPECT_EQ(utf8::DecodeLossy("\xe4\xb8"
                              "a\xe4\xb8\xad"),
            f + "a中");
  EXPECT_EQ(utf8::DecodeLossy("\xff\xfe"), f + f);
}

TEST(Utf8Test, HoldsBackOnlyAnIncompleteValidTail) {
  std::string out;
  EXPECT_EQ(utf8::AppendLossy("ab\xe4\xb8", true, &out), 2u);
  EXPECT_EQ(out, "ab");
  out.clear();
  EXPECT_EQ(utf8::AppendLossy("ab\xe4\x41", true, &out), 4u);  // invalid: emitted at once
  EXPECT_EQ(out, std::string("ab") + kFffd + "A");
  out.clear();
  EXPECT_EQ(utf8::AppendLossy("\xf0\x9f\x98", true, &out), 0u);
  EXPECT_EQ(out, "");
}

TEST(ByteLevelTest, AlphabetRoundTripsEveryByte) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::string encoded = ByteLevelEncode(all);
  EXPECT_EQ(ByteLevelDecode(encoded), all);
  EXPECT_EQ(ByteLevelEncode(" "), "Ġ");
  EXPECT_EQ(ByteLevelEncode("\n"), "Ċ");
  EXPECT_EQ(ByteLevelEncode("A~"), "A~");
  EXPECT_EQ(ByteLevelDecode("Ġthe"), " the");
  EXPECT_EQ(ByteLevelDecode("<｜User｜>"), std::nullopt);  // not in the alphabet
}

std::vector<std::string> Matches(const std::string& pattern, const std::string& subject) {
  std::unique_ptr<Regex> re = *Regex::FromOniguruma(pattern);
  std::vector<std::string> out;
  size_t from = 0, begin, end;
  while (from <= subject.size() && re->Search(subject, from, &begin, &end) == 1 && end > begin) {
    out.push_back(subject.substr(begin, end - begin));
    from = end;
  }
  return out;
}

TEST(RegexTest, SpaceIsOnigurumasWhiteSpace) {
  // U+0085 is white space for Oniguruma (PCRE2's UCP \s lacks it); U+FEFF
  // and U+180E are not.
  EXPECT_THAT(Matches(R"(\s+)", "a\u0085\u00a0\u3000b"), ElementsAre("\u0085\u00a0\u3000"));
  EXPECT_THAT(Matches(R"(\s+)", "a\ufeff\u180eb"), ElementsAre());
  EXPECT_THAT(Matches(R"(\S+)", "ab\u0085cd"), ElementsAre("ab", "cd"));
  EXPECT_THAT(Matches(R"([^\s\p{L}]+)", "ab 12\u0085!c"), ElementsAre("12", "!"));
  EXPECT_THAT(Matches(R"(\s+(?!\S)|\s+)", "a   b"), ElementsAre("  ", " "));
}

TEST(RegexTest, TranslationRejectsOnigurumaOnlyClasses) {
  EXPECT_THAT(TranslateOnigurumaPattern("[a-z&&b]").status().message(), HasSubstr("'&&'"));
  EXPECT_THAT(TranslateOnigurumaPattern("[a[bc]]").status().message(), HasSubstr("nested"));
  EXPECT_THAT(TranslateOnigurumaPattern(R"([\S])").status().message(), HasSubstr("negated"));
  EXPECT_EQ(*TranslateOnigurumaPattern(R"([[:alpha:]\]x]\p{L}\x{41})"),
            R"([[:alpha:]\]x]\p{L}\x{41})");
  EXPECT_EQ(*TranslateOnigurumaPattern("[]a]"), R"([\]a])");
}

std::vector<std::string> Pieces(const PreTokenizer& pre, std::string_view text) {
  std::vector<std::string> pieces;
  EXPECT_TRUE(pre.Run(text, [&](std::string_view p) { pieces.emplace_back(p); }).ok());
  return pieces;
}

PreTokenizer SplitOn(const std::string& pattern, SplitBehavior behavior, bool invert = false) {
  PreTokenizer pre;
  pre.AddSplit(*Regex::FromOniguruma(pattern), behavior, invert);
  return pre;
}

TEST(PreTokenizerTest, SplitBehaviors) {
  const std::string text = "a--b-c";
  EXPECT_THAT(Pieces(SplitOn("-", SplitBehavior::kIsolated), text),
              ElementsAre("a", "-", "-", "b", "-", "c"));
  EXPECT_THAT(Pieces(SplitOn("-", SplitBehavior::kRemoved), text), ElementsAre("a", "b", "c"));
  EXPECT_THAT(Pieces(SplitOn("-", SplitBehavior::kMergedWithPrevious), text),
              ElementsAre("a-", "-", "b-", "c"));
  EXPECT_THAT(Pieces(SplitOn("-", SplitBehavior::kMergedWithNext), text),
              ElementsAre("a", "-", "-b", "-c"));
  EXPECT_THAT(Pieces(SplitOn("-", SplitBehavior::kContiguous), text),
              ElementsAre("a", "--", "b", "-", "c"));
  EXPECT_THAT(Pieces(SplitOn("-", SplitBehavior::kRemoved, /*invert=*/true), text),
              ElementsAre("-", "-", "-"));
  EXPECT_THAT(Pieces(SplitOn("-", SplitBehavior::kContiguous, /*invert=*/true), text),
              ElementsAre("a", "--", "b", "-", "c"));
  // Empty matches cut nothing.
  EXPECT_THAT(Pieces(SplitOn("x*", SplitBehavior::kIsolated), "abxxc"),
              ElementsAre("a", "b", "xx", "c"));
}

TEST(PreTokenizerTest, StepsApplyToEachPieceSeparately) {
  PreTokenizer pre;
  pre.AddSplit(*Regex::FromOniguruma(R"(\p{N}{1,3})"), SplitBehavior::kIsolated, false);
  pre.AddSplit(*Regex::FromOniguruma(R"(\s+(?!\S)|\s+)"), SplitBehavior::kIsolated, false);
  // "  " before the number: the lookahead sees the end of its piece.
  EXPECT_THAT(Pieces(pre, "x  1234"), ElementsAre("x", "  ", "123", "4"));
}

TEST(PreTokenizerTest, ByteLevelPrefixSpaceAndGpt2Regex) {
  PreTokenizer pre;
  ASSERT_TRUE(pre.AddByteLevel(/*add_prefix_space=*/true, /*use_regex=*/true).ok());
  EXPECT_THAT(Pieces(pre, "Hello world's  end"),
              ElementsAre(" Hello", " world", "'s", " ", " end"));
}

TEST(AddedTokensTest, LeftmostLongestAndOptions) {
  std::vector<AddedToken> tokens = {{.id = 10, .content = "<a>"},
                                    {.id = 11, .content = "<a><b>"},
                                    {.id = 12, .content = "[L]", .lstrip = true},
                                    {.id = 13, .content = "[R]", .rstrip = true},
                                    {.id = 14, .content = "w", .single_word = true}};
  AddedTokenMatcher matcher(tokens);
  auto split = [&](std::string_view text) {
    std::vector<std::pair<std::string, int32_t>> out;
    matcher.Split(text, [&](std::string_view p, int32_t id) { out.emplace_back(p, id); });
    return out;
  };
  using P = std::pair<std::string, int32_t>;
  EXPECT_THAT(split("x<a><b><a>y"),
              ElementsAre(P{"x", -1}, P{"<a><b>", 11}, P{"<a>", 10}, P{"y", -1}));
  EXPECT_THAT(split("x  [L]  [R]  y"),
              ElementsAre(P{"x", -1}, P{"  [L]", 12}, P{"  ", -1}, P{"[R]  ", 13}, P{"y", -1}));
  EXPECT_THAT(split("a w b wx"), ElementsAre(P{"a ", -1}, P{"w", 14}, P{" b wx", -1}));
}

// Reference BPE on strings, written for clarity: merge the lowest-ranked
// adjacent pair, leftmost first, until none is left.
std::vector<std::string> NaiveBpe(const std::vector<std::pair<std::string, std::string>>& merges,
                                  const std::string& word) {
  std::vector<std::string> symbols;
  for (char c : word) symbols.emplace_back(1, c);
  while (true) {
    size_t best = 0, best_rank = merges.size();
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      for (size_t r = 0; r < best_rank; ++r) {
        if (merges[r].first == symbols[i] && merges[r].second == symbols[i + 1]) {
          best = i;
          best_rank = r;
          break;
        }
      }
    }
    if (best_rank == merges.size()) return symbols;
    symbols[best] += symbols[best + 1];
    symbols.erase(symbols.begin() + best + 1);
  }
}

TEST(BpeTest, SmallAndLargePiecesMatchNaiveMerging) {
  BpeSpec spec;
  spec.merges = {{"a", "b"},   {"b", "a"},  {"ab", "a"},  {"a", "a"},    {"aa", "b"},
                 {"ba", "ba"}, {"c", "ab"}, {"aa", "aa"}, {"cab", "ab"}, {"b", "b"}};
  std::vector<std::string> tokens = {"a", "b", "c"};
  for (const auto& [l, r] : spec.merges) tokens.push_back(l + r);
  for (size_t i = 0; i < tokens.size(); ++i) {
    spec.vocab.emplace_back(tokens[i], static_cast<int32_t>(i));
  }
  const auto merges = spec.merges;
  std::unique_ptr<BpeModel> model = *BpeModel::Build(spec);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 400; ++trial) {
    std::string word(1 + rng() % 160, 'a');
    for (char& c : word) c = "aabbc"[rng() % 5];
    std::vector<int32_t> ids;
    model->EncodePiece(word, &ids);
    std::vector<std::string> got;
    for (int32_t id : ids) got.push_back(tokens[id]);
    ASSERT_EQ(got, NaiveBpe(merges, word)) << word;
  }
}

}  // namespace
}  // namespace xpd::tokenizer
