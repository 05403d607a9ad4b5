// libFuzzer target: arbitrary bytes as tokenizer.json content. Loading must
// fail cleanly (an InvalidArgument naming the file) or give a tokenizer
// that encodes and decodes without crashing. Only short texts are encoded:
// a fuzzed regex may be slow by construction, and PCRE2's match limits turn
// runaway backtracking into an error rather than a hang.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/tokenizer/streaming_detokenizer.h"
#include "common/tokenizer/tokenizer.h"
#include "common/tokenizer/utf8.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::unique_ptr<xpd::tokenizer::Tokenizer>> tok =
      xpd::tokenizer::Tokenizer::LoadFromJson(json, "fuzz.json");
  if (!tok.ok()) {
    Check(tok.status().code() == absl::StatusCode::kInvalidArgument,
          "load errors are InvalidArgument");
    Check(tok.status().message().substr(0, 11) == "fuzz.json: ", "load errors name the file");
    return 0;
  }
  const xpd::tokenizer::Tokenizer& t = **tok;
  std::vector<std::string> texts = {"Hello, world! 123 <s> \xe4\xb8\xad\xe6\x96\x87\n\t x"};
  // A short valid-UTF-8 prefix of the input itself, as text.
  std::string_view prefix = json.substr(0, 96);
  if (auto bad = xpd::tokenizer::utf8::FindInvalid(prefix)) prefix = prefix.substr(0, *bad);
  texts.emplace_back(prefix);
  for (const std::string& text : texts) {
    absl::StatusOr<std::vector<int32_t>> ids = t.Encode(text);
    if (!ids.ok()) {
      Check(ids.status().code() == absl::StatusCode::kResourceExhausted,
            "valid UTF-8 fails only on a regex resource limit");
      continue;
    }
    for (int32_t id : *ids) Check(id >= 0 && id < t.id_space(), "ids are in the id space");
    const std::string decoded = t.Decode(*ids, false);
    xpd::tokenizer::StreamingDetokenizer stream(t, false);
    std::string streamed;
    for (int32_t id : *ids) streamed += stream.Add(id);
    streamed += stream.Flush();
    Check(streamed == decoded, "streaming and whole decode agree");
    (void)t.PreTokenize(text);
  }
  return 0;
}
