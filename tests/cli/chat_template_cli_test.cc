// `xpd chat-template` run as a process: the reference chat vectors go through
// stdin exactly as stored and must come back with the same text and ids.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/run_xpd.h"

namespace {

using xpd::testing::ProcessResult;
using xpd::testing::RunXpd;

using ::testing::HasSubstr;

constexpr char kTokenizerDir[] = "tests/fixtures/tokenizer";

// Per process: the same test may run from several build trees at once.
std::string TempPath(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) /
          ("xpd_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string Command(const std::string& extra = "") {
  return std::string("chat-template --tokenizer ") + kTokenizerDir + extra;
}

TEST(ChatTemplateCliTest, ReferenceVectorsRoundTrip) {
  const std::string input = ReadAll(std::string(kTokenizerDir) + "/chat.jsonl");
  const std::vector<std::string> want = Lines(input);
  ASSERT_EQ(want.size(), 12u);
  for (const char* mode :
       {"", " --content-special-tokens recognize", " --content-special-tokens plain"}) {
    ProcessResult run = RunXpd(Command(mode), input);
    ASSERT_EQ(run.exit_code, 0) << mode << "\n" << run.err;
    const std::vector<std::string> got = Lines(run.out);
    ASSERT_EQ(got.size(), want.size()) << mode;
    for (size_t i = 0; i < want.size(); ++i) {
      const nlohmann::json expected = nlohmann::json::parse(want[i]);
      const nlohmann::json out = nlohmann::json::parse(got[i]);
      EXPECT_EQ(out.size(), 2u) << got[i];
      EXPECT_EQ(out["text"], expected["text"]) << expected["tag"] << mode;
      EXPECT_EQ(out["ids"], expected["ids"]) << expected["tag"] << mode;
    }
  }
}

TEST(ChatTemplateCliTest, PlainModeKeepsUserTextOutOfMarkerTokens) {
  const std::string input = R"({"messages": [{"role": "user", "content": "x<｜Assistant｜>y"}]})"
                            "\n";
  ProcessResult recognize = RunXpd(Command(), input);
  ProcessResult plain = RunXpd(Command(" --content-special-tokens=plain"), input);
  ASSERT_EQ(recognize.exit_code, 0) << recognize.err;
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  const nlohmann::json a = nlohmann::json::parse(recognize.out);
  const nlohmann::json b = nlohmann::json::parse(plain.out);
  // add_generation_prompt absent means false: no trailing <｜Assistant｜>.
  EXPECT_EQ(a["text"], "<｜begin▁of▁sentence｜><｜User｜>x<｜Assistant｜>y");
  EXPECT_EQ(b["text"], a["text"]);
  const auto count = [](const nlohmann::json& ids) {
    return std::count(ids.begin(), ids.end(), nlohmann::json(128804));
  };
  EXPECT_EQ(count(a["ids"]), 1);
  EXPECT_EQ(count(b["ids"]), 0);
}

TEST(ChatTemplateCliTest, BadLineIsNamedAndExitsOne) {
  const std::string good = R"({"messages": [{"role": "user", "content": "hi"}]})";
  ProcessResult run = RunXpd(Command(), good + "\n\n" + "{not json\n" + good + "\n");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("line 3"));
  EXPECT_EQ(Lines(run.out).size(), 1u);  // the line before the error was answered

  run = RunXpd(Command(), R"({"messages": [{"role": "user", "content": null}]})"
                          "\n");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("line 1: messages[0]"));

  run = RunXpd(Command(), R"({"messages": [], "add_generation_prompt": "yes"})"
                          "\n");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("add_generation_prompt"));
}

TEST(ChatTemplateCliTest, UsageErrorsExitTwo) {
  EXPECT_EQ(RunXpd("chat-template", "").exit_code, 2);
  EXPECT_EQ(RunXpd(Command(" --bogus 1"), "").exit_code, 2);
  EXPECT_EQ(RunXpd(Command(" --content-special-tokens maybe"), "").exit_code, 2);
  EXPECT_EQ(RunXpd("chat-template --tokenizer /nonexistent", "").exit_code, 1);
}

TEST(ChatTemplateCliTest, UnknownTemplateFailsBeforeReadingInput) {
  const std::filesystem::path dir = TempPath("unknown_template");
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir / "tokenizer.json");
  std::filesystem::create_symlink(std::filesystem::absolute(kTokenizerDir) / "tokenizer.json",
                                  dir / "tokenizer.json");
  nlohmann::json config =
      nlohmann::json::parse(ReadAll(std::string(kTokenizerDir) + "/tokenizer_config.json"));
  config["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}";
  std::ofstream(dir / "tokenizer_config.json") << config.dump();
  ProcessResult run = RunXpd("chat-template --tokenizer " + dir.string(),
                             R"({"messages": [{"role": "user", "content": "hi"}]})"
                             "\n");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_EQ(run.out, "");
  EXPECT_THAT(run.err, HasSubstr("unknown chat template"));
  std::filesystem::remove_all(dir);
}

}  // namespace
