// `xpd tokenize`, `xpd detokenize` and the default dummy model's tokenizer,
// run as real processes against the tokenizer fixtures.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/run_xpd.h"

namespace {

using ::testing::HasSubstr;
using xpd::testing::ProcessResult;
using xpd::testing::RunXpd;
using Json = nlohmann::json;
namespace fs = std::filesystem;

constexpr char kFixtures[] = "tests/fixtures/tokenizer";

// Unique per process: ctest runs the tests of this file in parallel.
std::string TempPath(const std::string& name) {
  return (fs::path(::testing::TempDir()) / (std::to_string(getpid()) + "_" + name)).string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<Json> ReadJsonl(const std::string& text) {
  std::vector<Json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(Json::parse(line));
  return out;
}

TEST(TokenizeCliTest, TokenizeMatchesEveryEncodeVector) {
  const std::vector<Json> records = ReadJsonl(ReadFile(std::string(kFixtures) + "/encode.jsonl"));
  ASSERT_EQ(records.size(), 254u);
  std::string input;
  for (const Json& r : records) input += Json{{"text", r["text"]}}.dump() + "\n";
  const ProcessResult run = RunXpd(std::string("tokenize --tokenizer ") + kFixtures, input);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::vector<Json> lines = ReadJsonl(run.out);
  ASSERT_EQ(lines.size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(lines[i], Json({{"ids", records[i]["ids"]}})) << records[i]["text"];
  }
}

TEST(TokenizeCliTest, DetokenizeMatchesEveryDecodeVectorInBothModes) {
  const std::vector<Json> records = ReadJsonl(ReadFile(std::string(kFixtures) + "/decode.jsonl"));
  for (const bool skip : {false, true}) {
    std::string input;
    std::vector<std::string> want;
    for (const Json& r : records) {
      if (r["skip_special_tokens"] != skip) continue;
      input += Json{{"ids", r["ids"]}}.dump() + "\n";
      want.push_back(r["text"]);
    }
    ASSERT_FALSE(want.empty());
    const ProcessResult run = RunXpd(std::string("detokenize --tokenizer ") + kFixtures +
                                         "/tokenizer.json" + (skip ? " --skip-special-tokens" : ""),
                                     input);
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const std::vector<Json> lines = ReadJsonl(run.out);
    ASSERT_EQ(lines.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(lines[i], Json({{"text", want[i]}}));
  }
}

TEST(TokenizeCliTest, BadLineNamesItsNumberAndExits1) {
  const std::string dir = std::string(" --tokenizer ") + kFixtures;
  ProcessResult run = RunXpd("tokenize" + dir, "{\"text\": \"hi\"}\n{\"text\": \"oops\n");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(run.out, "{\"ids\":[6366]}\n");  // the good line before it was written
  EXPECT_THAT(run.err, HasSubstr("line 2: invalid JSON"));

  run = RunXpd("tokenize" + dir, "\n{\"txt\": \"hi\"}\n");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("line 2: expected an object {\"text\""));

  run = RunXpd("detokenize" + dir, "{\"ids\": [1, 2]}\n{\"ids\": [5, \"x\"]}\n");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("line 2: ids[1] is \"x\", not a 32-bit integer"));

  run = RunXpd("detokenize" + dir, "{\"ids\": [4294967296]}\n");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("line 1: ids[0]"));
}

TEST(TokenizeCliTest, UsageErrorsExit2) {
  EXPECT_EQ(RunXpd("tokenize").exit_code, 2);
  EXPECT_EQ(RunXpd("detokenize --skip-special-tokens").exit_code, 2);
  EXPECT_EQ(RunXpd(std::string("tokenize --tokenizer ") + kFixtures + " --bogus").exit_code, 2);
  const ProcessResult missing = RunXpd("tokenize --tokenizer /nonexistent/tok");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent/tok: cannot open"));
}

TEST(TokenizeCliTest, DefaultDummyModelCarriesTheTokenizer) {
  const std::string dir = TempPath("dummy_default_with_tokenizer");
  fs::remove_all(dir);
  const ProcessResult run = RunXpd("dummy-model --preset default --out " + dir);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_EQ(ReadFile(dir + "/" + name), ReadFile(std::string(kFixtures) + "/" + name)) << name;
  }
  absl::StatusOr<std::unique_ptr<xpd::tokenizer::Tokenizer>> tok =
      xpd::tokenizer::Tokenizer::Load(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Json config = Json::parse(ReadFile(dir + "/config.json"));
  EXPECT_LE((*tok)->id_space(), config["vocab_size"].get<int>());
  EXPECT_THAT(ReadFile(dir + "/README.md"), HasSubstr("tokenizer.json and tokenizer_config.json"));

  // Text prompts work against the checkpoint directory.
  const ProcessResult ids =
      RunXpd("tokenize --tokenizer " + dir, "{\"text\": \"Hello, world!\"}\n");
  EXPECT_EQ(ids.out, "{\"ids\":[19923,14,2058,3]}\n");
  fs::remove_all(dir);
}

TEST(TokenizeCliTest, DummyModelRefusesATokenizerThatDoesNotFit) {
  // small has 8192 ids, far fewer than the tokenizer's 128815; refused
  // before anything is written.
  const std::string dir = TempPath("dummy_small_refused");
  const ProcessResult run =
      RunXpd("dummy-model --preset small --out " + dir + " --tokenizer " + kFixtures);
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(run.err, HasSubstr("128815 token ids do not fit this preset's vocabulary of 8192"));
  EXPECT_FALSE(fs::exists(dir + "/config.json"));
}

}  // namespace
