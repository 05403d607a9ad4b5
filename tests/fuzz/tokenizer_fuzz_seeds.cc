// Writes the fuzzers' seed corpora, so they start from meaningful inputs:
//   ENCODE_DIR: every encode.jsonl and chat.jsonl text of the fixtures, one file each;
//   JSON_DIR:   small tokenizer.json files: a cut-down DeepSeek-V3 tokenizer
//               (its pre-tokenizer, decoder and first added tokens, the
//               byte tokens and the merges among them) and variants using
//               the other supported options.
// usage: tokenizer_fuzz_seeds FIXTURES_DIR ENCODE_DIR JSON_DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "nlohmann/json.hpp"

namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

void Write(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

Json MiniDeepSeek(const Json& full) {
  Json mini = full;
  Json vocab = Json::object();
  std::set<std::string> kept;
  for (const auto& [token, id] : full["model"]["vocab"].items()) {
    if (id.get<int>() < 600) {
      vocab[token] = id;
      kept.insert(token);
    }
  }
  Json merges = Json::array();
  for (const Json& m : full["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const size_t space = s.find(' ');
    const std::string a = s.substr(0, space), b = s.substr(space + 1);
    if (kept.count(a) && kept.count(b) && kept.count(a + b)) merges.push_back(m);
  }
  mini["model"]["vocab"] = vocab;
  mini["model"]["merges"] = merges;
  Json added = Json::array();
  for (const Json& t : full["added_tokens"]) {
    if (t["id"].get<int>() < 3 || t["id"].get<int>() >= 128800) added.push_back(t);
  }
  mini["added_tokens"] = added;
  return mini;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s FIXTURES_DIR ENCODE_DIR JSON_DIR\n", argv[0]);
    return 2;
  }
  const fs::path fixtures = argv[1], encode_dir = argv[2], json_dir = argv[3];
  fs::create_directories(encode_dir);
  fs::create_directories(json_dir);
  int count = 0;
  for (const char* name : {"encode.jsonl", "chat.jsonl"}) {
    std::ifstream in(fixtures / name);
    std::string line;
    while (std::getline(in, line)) {
      Write(encode_dir / ("seed" + std::to_string(count++)),
            Json::parse(line)["text"].get<std::string>());
    }
  }
  std::ifstream in(fixtures / "tokenizer.json");
  std::stringstream text;
  text << in.rdbuf();
  const Json mini = MiniDeepSeek(Json::parse(text.str()));
  Write(json_dir / "deepseek_mini.json", mini.dump());

  Json gpt2 = mini;  // ByteLevel alone: GPT-2's regex and a prefix space
  gpt2["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  Write(json_dir / "gpt2_style.json", gpt2.dump());

  Json options = mini;  // other split behaviors, literal patterns, added-token options
  Json& steps = options["pre_tokenizer"]["pretokenizers"];
  steps[0]["behavior"] = "MergedWithPrevious";
  steps[1] = {
      {"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Removed"}, {"invert", true}};
  steps[2]["behavior"] = "Contiguous";
  options["added_tokens"][0]["lstrip"] = true;
  options["added_tokens"][1]["rstrip"] = true;
  options["added_tokens"][2]["single_word"] = true;
  options["model"]["ignore_merges"] = true;
  options["model"]["merges"] = Json::array();
  for (const Json& m : mini["model"]["merges"]) {  // the [a, b] pair form
    const std::string s = m.get<std::string>();
    options["model"]["merges"].push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
  }
  Write(json_dir / "options.json", options.dump(1));
  printf("wrote %d text seeds to %s and 3 tokenizer.json seeds to %s\n", count, encode_dir.c_str(),
         json_dir.c_str());
  return 0;
}
