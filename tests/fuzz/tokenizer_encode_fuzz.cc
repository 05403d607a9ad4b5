// libFuzzer target: DeepSeek-V3's tokenizer on arbitrary bytes. Encoding
// must never crash; valid UTF-8 must round-trip through Decode and through
// the streaming detokenizer, and its pre-tokenization pieces must join back
// to the input; invalid UTF-8 must be rejected with InvalidArgument. The
// same bytes read as token ids must decode without crashing, streaming and
// whole decoding agreeing.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/tokenizer/streaming_detokenizer.h"
#include "common/tokenizer/tokenizer.h"
#include "common/tokenizer/utf8.h"

namespace {

using xpd::tokenizer::EncodeOptions;
using xpd::tokenizer::SpecialTokenText;
using xpd::tokenizer::StreamingDetokenizer;
using xpd::tokenizer::Tokenizer;

const Tokenizer& Tok() {
  static const Tokenizer* const tokenizer = [] {
    auto loaded = Tokenizer::Load(XPD_TOKENIZER_FIXTURES);
    if (!loaded.ok()) {
      fprintf(stderr, "cannot load the tokenizer: %s\n",
              std::string(loaded.status().message()).c_str());
      std::abort();
    }
    return loaded->release();
  }();
  return *tokenizer;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

std::string Stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  StreamingDetokenizer stream(tok, skip);
  std::string text;
  for (int32_t id : ids) text += stream.Add(id);
  return text + stream.Flush();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Tokenizer& tok = Tok();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool valid = !xpd::tokenizer::utf8::FindInvalid(text).has_value();
  for (const SpecialTokenText mode :
       {SpecialTokenText::kRecognize, SpecialTokenText::kAsPlainText}) {
    absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(text, EncodeOptions{mode});
    if (!valid) {
      Check(!ids.ok() && ids.status().code() == absl::StatusCode::kInvalidArgument,
            "invalid UTF-8 is rejected with InvalidArgument");
      continue;
    }
    Check(ids.ok(), "valid UTF-8 encodes");
    for (int32_t id : *ids) Check(id >= 0 && id < tok.id_space(), "ids are in the id space");
    Check(tok.Decode(*ids, false) == text, "Decode(Encode(x)) == x");
    Check(Stream(tok, *ids, false) == text, "streaming decode of Encode(x) == x");
  }
  if (valid) {
    absl::StatusOr<std::vector<std::string>> pieces = tok.PreTokenize(text);
    Check(pieces.ok(), "valid UTF-8 pre-tokenizes");
    std::string joined;
    for (const std::string& p : *pieces) joined += p;
    Check(joined == text, "pre-tokenization pieces join to the input");
  }

  // The same bytes as ids (any value, unknown ones included).
  std::vector<int32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  for (int32_t& id : ids) id %= tok.id_space() + 64;  // mostly real tokens, some unknown
  for (const bool skip : {false, true}) {
    Check(Stream(tok, ids, skip) == tok.Decode(ids, skip), "streaming and whole decode agree");
  }
  return 0;
}
