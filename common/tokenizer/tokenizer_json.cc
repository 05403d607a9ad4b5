#include "common/tokenizer/tokenizer_json.h"

#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace xpd::tokenizer {
namespace {

using Json = nlohmann::json;

constexpr int kMaxSequenceDepth = 8;
constexpr int kMaxPreTokenizerSteps = 64;

absl::Status Error(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::Status WrongType(const std::string& path, const char* expected, const Json& got) {
  return Error(path, absl::StrCat("expected ", expected, ", got ", got.type_name()));
}

// The member `key` of object `obj`, or nullptr when it is absent or null.
const Json* Member(const Json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

absl::StatusOr<bool> OptionalBool(const Json& obj, const std::string& path, const char* key,
                                  bool fallback) {
  const Json* v = Member(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) return WrongType(absl::StrCat(path, ".", key), "a boolean", *v);
  return v->get<bool>();
}

absl::StatusOr<std::string> RequiredString(const Json& obj, const std::string& path,
                                           const char* key) {
  const Json* v = Member(obj, key);
  if (v == nullptr) return Error(absl::StrCat(path, ".", key), "missing");
  if (!v->is_string()) return WrongType(absl::StrCat(path, ".", key), "a string", *v);
  return v->get<std::string>();
}

absl::StatusOr<int32_t> TokenIdValue(const Json& v, const std::string& path) {
  if (!v.is_number_integer()) return WrongType(path, "an integer token id", v);
  if (v.is_number_unsigned() ? v.get<uint64_t>() >= kMaxTokenId
                             : (v.get<int64_t>() < 0 || v.get<int64_t>() >= kMaxTokenId)) {
    return Error(path,
                 absl::StrCat("token id ", v.dump(), " is out of range [0, ", kMaxTokenId, ")"));
  }
  return static_cast<int32_t>(v.get<int64_t>());
}

absl::Status CheckNormalizer(const Json& j, const std::string& path, int depth) {
  if (!j.is_object()) return WrongType(path, "an object or null", j);
  XPD_ASSIGN_OR_RETURN(const std::string type, RequiredString(j, path, "type"));
  if (type != "Sequence") {
    return Error(path, absl::StrCat("normalizer type '", type,
                                    "' is not supported (only none or an empty Sequence)"));
  }
  if (depth >= kMaxSequenceDepth) return Error(path, "Sequence nested too deeply");
  const Json* list = Member(j, "normalizers");
  if (list == nullptr || !list->is_array()) {
    return WrongType(path + ".normalizers", "an array", list ? *list : Json());
  }
  for (size_t i = 0; i < list->size(); ++i) {
    XPD_RETURN_IF_ERROR(
        CheckNormalizer((*list)[i], absl::StrCat(path, ".normalizers[", i, "]"), depth + 1));
  }
  return absl::OkStatus();
}

absl::StatusOr<SplitBehavior> ParseBehavior(const std::string& name, const std::string& path) {
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return Error(path, absl::StrCat("unknown split behavior '", name, "'"));
}

struct PreTokenizerBuilder {
  PreTokenizer* out;
  int steps = 0;
  bool saw_byte_level = false;

  absl::Status Add(const Json& j, const std::string& path, int depth) {
    if (!j.is_object()) return WrongType(path, "an object", j);
    XPD_ASSIGN_OR_RETURN(const std::string type, RequiredString(j, path, "type"));
    if (type == "Sequence") {
      if (depth >= kMaxSequenceDepth) return Error(path, "Sequence nested too deeply");
      const Json* list = Member(j, "pretokenizers");
      if (list == nullptr || !list->is_array()) {
        return WrongType(path + ".pretokenizers", "an array", list ? *list : Json());
      }
      for (size_t i = 0; i < list->size(); ++i) {
        XPD_RETURN_IF_ERROR(
            Add((*list)[i], absl::StrCat(path, ".pretokenizers[", i, "]"), depth + 1));
      }
      return absl::OkStatus();
    }
    if (++steps > kMaxPreTokenizerSteps) return Error(path, "too many pre-tokenizer steps");
    if (saw_byte_level) {
      return Error(path, absl::StrCat("a ", type,
                                      " step after ByteLevel is not supported (ByteLevel must "
                                      "be the last step)"));
    }
    if (type == "ByteLevel") {
      saw_byte_level = true;
      // Hugging Face's defaults when the fields are absent.
      XPD_ASSIGN_OR_RETURN(const bool prefix, OptionalBool(j, path, "add_prefix_space", true));
      XPD_ASSIGN_OR_RETURN(const bool use_regex, OptionalBool(j, path, "use_regex", true));
      return out->AddByteLevel(prefix, use_regex);
    }
    if (type != "Split") {
      return Error(path + ".type", absl::StrCat("pre-tokenizer '", type,
                                                "' is not supported (supported: Sequence, "
                                                "Split, ByteLevel)"));
    }
    const Json* pattern = Member(j, "pattern");
    const std::string pattern_path = path + ".pattern";
    if (pattern == nullptr) return Error(pattern_path, "missing");
    if (!pattern->is_object()) return WrongType(pattern_path, "an object", *pattern);
    absl::StatusOr<std::unique_ptr<Regex>> regex;
    if (const Json* re = Member(*pattern, "Regex")) {
      if (!re->is_string()) return WrongType(pattern_path + ".Regex", "a string", *re);
      regex = Regex::FromOniguruma(re->get<std::string>());
      if (!regex.ok()) return Error(pattern_path + ".Regex", std::string(regex.status().message()));
    } else if (const Json* literal = Member(*pattern, "String")) {
      if (!literal->is_string()) return WrongType(pattern_path + ".String", "a string", *literal);
      regex = Regex::FromLiteral(literal->get<std::string>());
      if (!regex.ok()) {
        return Error(pattern_path + ".String", std::string(regex.status().message()));
      }
    } else {
      return Error(pattern_path, "needs a \"Regex\" or a \"String\"");
    }
    XPD_ASSIGN_OR_RETURN(const std::string behavior_name, RequiredString(j, path, "behavior"));
    XPD_ASSIGN_OR_RETURN(const SplitBehavior behavior,
                         ParseBehavior(behavior_name, path + ".behavior"));
    XPD_ASSIGN_OR_RETURN(const bool invert, OptionalBool(j, path, "invert", false));
    out->AddSplit(*std::move(regex), behavior, invert);
    return absl::OkStatus();
  }
};

absl::Status CheckDecoder(const Json* j) {
  if (j == nullptr) return Error("decoder", "missing (a ByteLevel decoder is required)");
  if (!j->is_object()) return WrongType("decoder", "an object", *j);
  XPD_ASSIGN_OR_RETURN(const std::string type, RequiredString(*j, "decoder", "type"));
  if (type != "ByteLevel") {
    return Error("decoder.type",
                 absl::StrCat("decoder '", type, "' is not supported (only ByteLevel)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<std::string, std::string>> ParseMerge(const Json& m,
                                                               const std::string& path) {
  if (m.is_string()) {
    const std::string s = m.get<std::string>();
    const size_t space = s.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == s.size() ||
        s.find(' ', space + 1) != std::string::npos) {
      return Error(path, absl::StrCat("'", s, "' is not two tokens separated by one space"));
    }
    return std::make_pair(s.substr(0, space), s.substr(space + 1));
  }
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
    return std::make_pair(m[0].get<std::string>(), m[1].get<std::string>());
  }
  return WrongType(path, "a string \"a b\" or a pair [\"a\", \"b\"]", m);
}

absl::StatusOr<std::unique_ptr<BpeModel>> ParseModel(const Json* j) {
  if (j == nullptr) return Error("model", "missing (the tokenizer has no model)");
  if (!j->is_object()) return WrongType("model", "an object", *j);
  if (const Json* type = Member(*j, "type")) {
    if (!type->is_string()) return WrongType("model.type", "a string", *type);
    if (type->get<std::string>() != "BPE") {
      return Error("model.type", absl::StrCat("model '", type->get<std::string>(),
                                              "' is not supported (only BPE)"));
    }
  }
  BpeSpec spec;
  const Json* vocab = Member(*j, "vocab");
  if (vocab == nullptr) return Error("model.vocab", "missing");
  if (!vocab->is_object()) return WrongType("model.vocab", "an object", *vocab);
  absl::flat_hash_map<int32_t, const std::string*> owner;
  spec.vocab.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const std::string path = absl::StrCat("model.vocab['", it.key(), "']");
    XPD_ASSIGN_OR_RETURN(const int32_t id, TokenIdValue(it.value(), path));
    auto [previous, inserted] = owner.try_emplace(id, &it.key());
    if (!inserted) {
      return Error("model.vocab", absl::StrCat("id ", id, " is used by both '", *previous->second,
                                               "' and '", it.key(), "'"));
    }
    spec.vocab.emplace_back(it.key(), id);
  }
  const Json* merges = Member(*j, "merges");
  if (merges == nullptr) return Error("model.merges", "missing");
  if (!merges->is_array()) return WrongType("model.merges", "an array", *merges);
  spec.merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    XPD_ASSIGN_OR_RETURN(auto merge,
                         ParseMerge((*merges)[i], absl::StrCat("model.merges[", i, "]")));
    spec.merges.push_back(std::move(merge));
  }
  if (const Json* dropout = Member(*j, "dropout")) {
    if (!dropout->is_number()) return WrongType("model.dropout", "a number or null", *dropout);
    if (dropout->get<double>() != 0.0)
      return Error("model.dropout", "BPE dropout is not supported");
  }
  if (const Json* unk = Member(*j, "unk_token")) {
    if (!unk->is_string()) return WrongType("model.unk_token", "a string or null", *unk);
    spec.unk_token = unk->get<std::string>();
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const Json* v = Member(*j, key)) {
      if (!v->is_string()) return WrongType(absl::StrCat("model.", key), "a string or null", *v);
      if (!v->get<std::string>().empty()) {
        return Error(absl::StrCat("model.", key), "is not supported by byte-level BPE here");
      }
    }
  }
  XPD_ASSIGN_OR_RETURN(const bool byte_fallback, OptionalBool(*j, "model", "byte_fallback", false));
  if (byte_fallback) return Error("model.byte_fallback", "true is not supported");
  XPD_ASSIGN_OR_RETURN(spec.fuse_unk, OptionalBool(*j, "model", "fuse_unk", false));
  XPD_ASSIGN_OR_RETURN(spec.ignore_merges, OptionalBool(*j, "model", "ignore_merges", false));
  return BpeModel::Build(std::move(spec));
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const Json* j) {
  std::vector<AddedToken> tokens;
  if (j == nullptr) return tokens;
  if (!j->is_array()) return WrongType("added_tokens", "an array", *j);
  absl::flat_hash_map<int32_t, size_t> by_id;
  for (size_t i = 0; i < j->size(); ++i) {
    const Json& t = (*j)[i];
    const std::string path = absl::StrCat("added_tokens[", i, "]");
    if (!t.is_object()) return WrongType(path, "an object", t);
    AddedToken token;
    const Json* id = Member(t, "id");
    if (id == nullptr) return Error(path + ".id", "missing");
    XPD_ASSIGN_OR_RETURN(token.id, TokenIdValue(*id, path + ".id"));
    XPD_ASSIGN_OR_RETURN(token.content, RequiredString(t, path, "content"));
    if (token.content.empty()) return Error(path + ".content", "is empty");
    XPD_ASSIGN_OR_RETURN(token.special, OptionalBool(t, path, "special", false));
    XPD_ASSIGN_OR_RETURN(token.lstrip, OptionalBool(t, path, "lstrip", false));
    XPD_ASSIGN_OR_RETURN(token.rstrip, OptionalBool(t, path, "rstrip", false));
    XPD_ASSIGN_OR_RETURN(token.single_word, OptionalBool(t, path, "single_word", false));
    XPD_ASSIGN_OR_RETURN(token.normalized, OptionalBool(t, path, "normalized", true));
    auto [previous, inserted] = by_id.try_emplace(token.id, i);
    if (!inserted && tokens[previous->second].content != token.content) {
      return Error(path + ".id", absl::StrCat("id ", token.id, " is already used by added_tokens[",
                                              previous->second, "]"));
    }
    tokens.push_back(std::move(token));
  }
  return tokens;
}

absl::StatusOr<TokenizerParts> ParseParts(const Json& root) {
  if (!root.is_object()) return WrongType("top level", "an object", root);
  TokenizerParts parts;
  XPD_ASSIGN_OR_RETURN(parts.model, ParseModel(Member(root, "model")));
  XPD_ASSIGN_OR_RETURN(parts.added_tokens, ParseAddedTokens(Member(root, "added_tokens")));
  if (const Json* normalizer = Member(root, "normalizer")) {
    XPD_RETURN_IF_ERROR(CheckNormalizer(*normalizer, "normalizer", 0));
  }
  const Json* pre = Member(root, "pre_tokenizer");
  if (pre == nullptr) {
    return Error("pre_tokenizer", "missing (a ByteLevel pre-tokenizer is required)");
  }
  parts.pre_tokenizer = std::make_unique<PreTokenizer>();
  PreTokenizerBuilder builder{parts.pre_tokenizer.get()};
  XPD_RETURN_IF_ERROR(builder.Add(*pre, "pre_tokenizer", 0));
  if (!builder.saw_byte_level) {
    return Error("pre_tokenizer",
                 "has no ByteLevel step; only byte-level BPE tokenizers are supported");
  }
  XPD_RETURN_IF_ERROR(CheckDecoder(Member(root, "decoder")));
  return parts;
}

}  // namespace

absl::StatusOr<TokenizerParts> ParseTokenizerJson(std::string_view json) {
  Json root;
  try {
    root = Json::parse(json.begin(), json.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", e.what()));
  }
  try {
    return ParseParts(root);
  } catch (const Json::exception& e) {
    // Every access above checks types first; this is a safety net.
    return absl::InvalidArgumentError(absl::StrCat("unexpected JSON content: ", e.what()));
  }
}

}  // namespace xpd::tokenizer
