#include "common/model/model_config.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace xpd::model {
namespace {

using nlohmann::json;

// Reads fields out of one JSON object; every error names the field (with its
// dotted path for nested objects) and the source, e.g. "config.json".
class FieldReader {
 public:
  FieldReader(const json& object, std::string source, std::string prefix = "")
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  absl::Status Error(const std::string& field, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": field '", prefix_, field, "' ", what));
  }

  // Absent or null -> nullopt, so optional fields may be written as null.
  const json* Find(const std::string& field) const {
    auto it = object_.find(field);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  absl::Status Int(const std::string& field, bool required, int64_t* out) const {
    const json* value = Find(field);
    if (value == nullptr) return required ? Missing(field) : absl::OkStatus();
    if (!value->is_number_integer()) return TypeError(field, "an integer", *value);
    if (value->is_number_unsigned() &&
        value->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Error(field, absl::StrCat("(", value->dump(), ") is out of range"));
    }
    *out = value->get<int64_t>();
    return absl::OkStatus();
  }

  absl::Status Double(const std::string& field, bool required, double* out) const {
    const json* value = Find(field);
    if (value == nullptr) return required ? Missing(field) : absl::OkStatus();
    if (!value->is_number()) return TypeError(field, "a number", *value);
    *out = value->get<double>();
    if (!std::isfinite(*out)) return Error(field, "must be finite");
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& field, bool required, bool* out) const {
    const json* value = Find(field);
    if (value == nullptr) return required ? Missing(field) : absl::OkStatus();
    if (!value->is_boolean()) return TypeError(field, "a boolean", *value);
    *out = value->get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(const std::string& field, bool required, std::string* out) const {
    const json* value = Find(field);
    if (value == nullptr) return required ? Missing(field) : absl::OkStatus();
    if (!value->is_string()) return TypeError(field, "a string", *value);
    *out = value->get<std::string>();
    return absl::OkStatus();
  }

  // A field that selects behaviour xpd implements in exactly one way.
  absl::Status Expect(const std::string& field, const std::string& value,
                      const std::string& supported) const {
    if (value == supported) return absl::OkStatus();
    return Error(field, absl::StrCat("('", value, "') is not supported; xpd implements only '",
                                     supported, "'"));
  }

  absl::Status Positive(const std::string& field, int64_t value) const {
    if (value > 0) return absl::OkStatus();
    return Error(field, absl::StrCat("(", value, ") must be positive"));
  }
  absl::Status NonNegative(const std::string& field, int64_t value) const {
    if (value >= 0) return absl::OkStatus();
    return Error(field, absl::StrCat("(", value, ") must not be negative"));
  }
  absl::Status PositiveReal(const std::string& field, double value) const {
    if (value > 0) return absl::OkStatus();
    return Error(field, absl::StrCat("(", value, ") must be positive"));
  }

 private:
  absl::Status Missing(const std::string& field) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": missing required field '", prefix_, field, "'"));
  }
  absl::Status TypeError(const std::string& field, absl::string_view want,
                         const json& value) const {
    return Error(field,
                 absl::StrCat("must be ", want, ", got ", value.type_name(), " ", value.dump()));
  }

  const json& object_;
  std::string source_;
  std::string prefix_;
};

#define XPD_RETURN_IF_ERROR_(expr)     \
  do {                                 \
    absl::Status status_ = (expr);     \
    if (!status_.ok()) return status_; \
  } while (0)

absl::StatusOr<RopeScaling> ParseRopeScaling(const json& object, const std::string& source) {
  FieldReader r(object, source, "rope_scaling.");
  RopeScaling rope;
  std::string type, rope_type;
  XPD_RETURN_IF_ERROR_(r.String("type", false, &type));
  XPD_RETURN_IF_ERROR_(r.String("rope_type", false, &rope_type));
  if (type.empty() && rope_type.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field 'rope_scaling' needs 'type' or 'rope_type'"));
  }
  if (!type.empty() && !rope_type.empty() && type != rope_type) {
    return r.Error("type",
                   absl::StrCat("('", type, "') disagrees with rope_type ('", rope_type, "')"));
  }
  rope.type = type.empty() ? rope_type : type;
  XPD_RETURN_IF_ERROR_(r.Expect(type.empty() ? "rope_type" : "type", rope.type, "yarn"));
  XPD_RETURN_IF_ERROR_(r.Double("factor", true, &rope.factor));
  XPD_RETURN_IF_ERROR_(r.PositiveReal("factor", rope.factor));
  XPD_RETURN_IF_ERROR_(
      r.Int("original_max_position_embeddings", true, &rope.original_max_position_embeddings));
  XPD_RETURN_IF_ERROR_(
      r.Positive("original_max_position_embeddings", rope.original_max_position_embeddings));
  // Absent keys take the YaRN defaults of Hugging Face's implementation;
  // mscale_all_dim absent means "no softmax-scale correction" there (0).
  rope.beta_fast = 32.0;
  rope.beta_slow = 1.0;
  rope.mscale = 1.0;
  rope.mscale_all_dim = 0.0;
  XPD_RETURN_IF_ERROR_(r.Double("beta_fast", false, &rope.beta_fast));
  XPD_RETURN_IF_ERROR_(r.Double("beta_slow", false, &rope.beta_slow));
  XPD_RETURN_IF_ERROR_(r.Double("mscale", false, &rope.mscale));
  XPD_RETURN_IF_ERROR_(r.Double("mscale_all_dim", false, &rope.mscale_all_dim));
  XPD_RETURN_IF_ERROR_(r.PositiveReal("beta_fast", rope.beta_fast));
  XPD_RETURN_IF_ERROR_(r.PositiveReal("beta_slow", rope.beta_slow));
  if (rope.beta_slow > rope.beta_fast) {
    return r.Error("beta_slow", absl::StrCat("(", rope.beta_slow, ") must not exceed beta_fast (",
                                             rope.beta_fast, ")"));
  }
  return rope;
}

absl::StatusOr<Fp8Quantization> ParseQuantization(const json& object, const std::string& source) {
  FieldReader r(object, source, "quantization_config.");
  std::string method, fmt = "e4m3", activation_scheme = "dynamic";
  XPD_RETURN_IF_ERROR_(r.String("quant_method", true, &method));
  XPD_RETURN_IF_ERROR_(r.Expect("quant_method", method, "fp8"));
  XPD_RETURN_IF_ERROR_(r.String("fmt", false, &fmt));
  XPD_RETURN_IF_ERROR_(r.Expect("fmt", fmt, "e4m3"));
  // Static activation scales would need tensors xpd does not load.
  XPD_RETURN_IF_ERROR_(r.String("activation_scheme", false, &activation_scheme));
  XPD_RETURN_IF_ERROR_(r.Expect("activation_scheme", activation_scheme, "dynamic"));

  Fp8Quantization quant;
  const json* block = r.Find("weight_block_size");
  if (block == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": missing required field 'quantization_config.weight_block_size'"));
  }
  if (!block->is_array() || block->size() != 2 || !(*block)[0].is_number_integer() ||
      !(*block)[1].is_number_integer() || (*block)[0].get<int64_t>() <= 0 ||
      (*block)[1].get<int64_t>() <= 0 || (*block)[0].get<int64_t>() > (1 << 20) ||
      (*block)[1].get<int64_t>() > (1 << 20)) {
    return r.Error("weight_block_size",
                   absl::StrCat("(", block->dump(), ") must be [rows, cols] of positive integers"));
  }
  quant.block_rows = static_cast<int32_t>((*block)[0].get<int64_t>());
  quant.block_cols = static_cast<int32_t>((*block)[1].get<int64_t>());
  XPD_RETURN_IF_ERROR_(r.String("scale_fmt", false, &quant.scale_fmt));
  if (!quant.scale_fmt.empty() && quant.scale_fmt != "ue8m0") {
    return r.Error("scale_fmt", absl::StrCat("('", quant.scale_fmt,
                                             "') is not supported; expected 'ue8m0' or absent"));
  }
  return quant;
}

absl::StatusOr<ModelConfig> Parse(const json& j, const std::string& source) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a JSON object, got ", j.type_name()));
  }
  FieldReader r(j, source);
  ModelConfig c;
  XPD_RETURN_IF_ERROR_(r.String("model_type", true, &c.model_type));
  XPD_RETURN_IF_ERROR_(r.Expect("model_type", c.model_type, "deepseek_v3"));

  struct IntField {
    const char* name;
    int64_t* value;
    bool required;
    int64_t min;  // smallest valid value
  };
  const IntField ints[] = {
      {"vocab_size", &c.vocab_size, true, 1},
      {"hidden_size", &c.hidden_size, true, 1},
      {"intermediate_size", &c.intermediate_size, true, 1},
      {"moe_intermediate_size", &c.moe_intermediate_size, true, 1},
      {"num_hidden_layers", &c.num_hidden_layers, true, 1},
      {"num_nextn_predict_layers", &c.num_nextn_predict_layers, false, 0},
      {"num_attention_heads", &c.num_attention_heads, true, 1},
      {"kv_lora_rank", &c.kv_lora_rank, true, 1},
      {"qk_nope_head_dim", &c.qk_nope_head_dim, true, 1},
      {"qk_rope_head_dim", &c.qk_rope_head_dim, true, 1},
      {"v_head_dim", &c.v_head_dim, true, 1},
      {"n_routed_experts", &c.n_routed_experts, true, 1},
      {"n_shared_experts", &c.n_shared_experts, true, 0},
      {"num_experts_per_tok", &c.num_experts_per_tok, true, 1},
      {"n_group", &c.n_group, true, 1},
      {"topk_group", &c.topk_group, true, 1},
      {"first_k_dense_replace", &c.first_k_dense_replace, true, 0},
      {"moe_layer_freq", &c.moe_layer_freq, false, 1},
      {"max_position_embeddings", &c.max_position_embeddings, true, 1},
      {"bos_token_id", &c.bos_token_id, false, 0},
      {"eos_token_id", &c.eos_token_id, false, 0},
  };
  for (const IntField& f : ints) {
    XPD_RETURN_IF_ERROR_(r.Int(f.name, f.required, f.value));
    XPD_RETURN_IF_ERROR_(f.min > 0 ? r.Positive(f.name, *f.value)
                                   : r.NonNegative(f.name, *f.value));
  }
  // q_lora_rank: null means a direct q_proj (V2-Lite); V3 always compresses.
  if (j.contains("q_lora_rank") && j["q_lora_rank"].is_null()) {
    return r.Error("q_lora_rank", "is null (no query compression); xpd requires a q_lora_rank");
  }
  XPD_RETURN_IF_ERROR_(r.Int("q_lora_rank", true, &c.q_lora_rank));
  XPD_RETURN_IF_ERROR_(r.Positive("q_lora_rank", c.q_lora_rank));

  XPD_RETURN_IF_ERROR_(r.Double("routed_scaling_factor", false, &c.routed_scaling_factor));
  XPD_RETURN_IF_ERROR_(r.PositiveReal("routed_scaling_factor", c.routed_scaling_factor));
  XPD_RETURN_IF_ERROR_(r.Double("rms_norm_eps", true, &c.rms_norm_eps));
  XPD_RETURN_IF_ERROR_(r.PositiveReal("rms_norm_eps", c.rms_norm_eps));
  XPD_RETURN_IF_ERROR_(r.Double("rope_theta", false, &c.rope_theta));
  XPD_RETURN_IF_ERROR_(r.PositiveReal("rope_theta", c.rope_theta));
  XPD_RETURN_IF_ERROR_(r.Bool("norm_topk_prob", false, &c.norm_topk_prob));
  XPD_RETURN_IF_ERROR_(r.Bool("tie_word_embeddings", false, &c.tie_word_embeddings));
  if (c.tie_word_embeddings) {
    return r.Error("tie_word_embeddings",
                   "(true) is not supported: DeepSeek-V3 has a separate "
                   "lm_head");
  }
  XPD_RETURN_IF_ERROR_(r.String("scoring_func", false, &c.scoring_func));
  XPD_RETURN_IF_ERROR_(r.Expect("scoring_func", c.scoring_func, "sigmoid"));
  XPD_RETURN_IF_ERROR_(r.String("topk_method", false, &c.topk_method));
  XPD_RETURN_IF_ERROR_(r.Expect("topk_method", c.topk_method, "noaux_tc"));
  XPD_RETURN_IF_ERROR_(r.String("hidden_act", false, &c.hidden_act));
  XPD_RETURN_IF_ERROR_(r.Expect("hidden_act", c.hidden_act, "silu"));

  // Cross-field constraints of the routing and attention layouts.
  if (c.n_routed_experts % c.n_group != 0) {
    return r.Error("n_group", absl::StrCat("(", c.n_group, ") must divide n_routed_experts (",
                                           c.n_routed_experts, ")"));
  }
  if (c.topk_group > c.n_group) {
    return r.Error("topk_group",
                   absl::StrCat("(", c.topk_group, ") must not exceed n_group (", c.n_group, ")"));
  }
  const int64_t selectable = c.n_routed_experts / c.n_group * c.topk_group;
  if (c.num_experts_per_tok > selectable) {
    return r.Error("num_experts_per_tok",
                   absl::StrCat("(", c.num_experts_per_tok, ") must not exceed the ", selectable,
                                " experts in topk_group (", c.topk_group, ") of n_group (",
                                c.n_group, ") groups"));
  }
  if (c.first_k_dense_replace > c.num_hidden_layers) {
    return r.Error("first_k_dense_replace",
                   absl::StrCat("(", c.first_k_dense_replace,
                                ") must not exceed num_hidden_layers (", c.num_hidden_layers, ")"));
  }
  if (c.qk_rope_head_dim % 2 != 0) {
    return r.Error("qk_rope_head_dim",
                   absl::StrCat("(", c.qk_rope_head_dim, ") must be even (rotary pairs)"));
  }
  for (const auto& [name, id] : {std::pair<const char*, int64_t>{"bos_token_id", c.bos_token_id},
                                 {"eos_token_id", c.eos_token_id}}) {
    if (id >= c.vocab_size) {
      return r.Error(name,
                     absl::StrCat("(", id, ") must be below vocab_size (", c.vocab_size, ")"));
    }
  }

  if (const json* rope = r.Find("rope_scaling")) {
    if (!rope->is_object()) {
      return r.Error("rope_scaling",
                     absl::StrCat("must be an object or null, got ", rope->type_name()));
    }
    absl::StatusOr<RopeScaling> parsed = ParseRopeScaling(*rope, source);
    if (!parsed.ok()) return parsed.status();
    c.rope_scaling = *parsed;
  }
  if (const json* quant = r.Find("quantization_config")) {
    if (!quant->is_object()) {
      return r.Error("quantization_config",
                     absl::StrCat("must be an object or null, got ", quant->type_name()));
    }
    absl::StatusOr<Fp8Quantization> parsed = ParseQuantization(*quant, source);
    if (!parsed.ok()) return parsed.status();
    c.quantization = *parsed;
  }
  return c;
}

#undef XPD_RETURN_IF_ERROR_

}  // namespace

double ModelConfig::SoftmaxScale() const {
  double m = 1.0;
  if (rope_scaling.has_value() && rope_scaling->factor > 1.0) {
    m = 0.1 * rope_scaling->mscale_all_dim * std::log(rope_scaling->factor) + 1.0;
  }
  return m * m / std::sqrt(static_cast<double>(qk_head_dim()));
}

absl::StatusOr<ModelConfig> ParseModelConfig(const json& j) { return Parse(j, "config.json"); }

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  json parsed;
  try {
    parsed = json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": invalid JSON: ", e.what()));
  }
  return Parse(parsed, path);
}

json ModelConfigToJson(const ModelConfig& c) {
  json j = {
      {"model_type", c.model_type},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"moe_intermediate_size", c.moe_intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_nextn_predict_layers", c.num_nextn_predict_layers},
      {"num_attention_heads", c.num_attention_heads},
      // Nominal in MLA (every head has its own K/V); written for HF tooling.
      {"num_key_value_heads", c.num_attention_heads},
      {"q_lora_rank", c.q_lora_rank},
      {"kv_lora_rank", c.kv_lora_rank},
      {"qk_nope_head_dim", c.qk_nope_head_dim},
      {"qk_rope_head_dim", c.qk_rope_head_dim},
      {"v_head_dim", c.v_head_dim},
      {"n_routed_experts", c.n_routed_experts},
      {"n_shared_experts", c.n_shared_experts},
      {"num_experts_per_tok", c.num_experts_per_tok},
      {"n_group", c.n_group},
      {"topk_group", c.topk_group},
      {"first_k_dense_replace", c.first_k_dense_replace},
      {"moe_layer_freq", c.moe_layer_freq},
      {"routed_scaling_factor", c.routed_scaling_factor},
      {"norm_topk_prob", c.norm_topk_prob},
      {"scoring_func", c.scoring_func},
      {"topk_method", c.topk_method},
      {"hidden_act", c.hidden_act},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"max_position_embeddings", c.max_position_embeddings},
      {"bos_token_id", c.bos_token_id},
      {"eos_token_id", c.eos_token_id},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"attention_bias", false},
      {"rope_scaling", nullptr},
  };
  if (c.rope_scaling) {
    const RopeScaling& r = *c.rope_scaling;
    j["rope_scaling"] = {{"type", r.type},
                         {"factor", r.factor},
                         {"original_max_position_embeddings", r.original_max_position_embeddings},
                         {"beta_fast", r.beta_fast},
                         {"beta_slow", r.beta_slow},
                         {"mscale", r.mscale},
                         {"mscale_all_dim", r.mscale_all_dim}};
  }
  if (c.quantization) {
    const Fp8Quantization& q = *c.quantization;
    j["quantization_config"] = {{"activation_scheme", "dynamic"},
                                {"fmt", "e4m3"},
                                {"quant_method", "fp8"},
                                {"weight_block_size", {q.block_rows, q.block_cols}}};
    if (!q.scale_fmt.empty()) j["quantization_config"]["scale_fmt"] = q.scale_fmt;
  }
  return j;
}

}  // namespace xpd::model
