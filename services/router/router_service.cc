#include "services/router/router_service.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/rpc/sampling_conversion.h"
#include "common/rpc/status_conversion.h"
#include "common/runtime/sampler.h"
#include "grpcpp/grpcpp.h"
#include "services/router/router_metrics.h"

namespace xpd::router {

RouterService::RouterService(RouterOptions options, model::ModelConfig config, RankDirectory& ranks,
                             std::unique_ptr<tokenizer::Tokenizer> tokenizer,
                             std::unique_ptr<tokenizer::TokenizerConfig> tokenizer_config,
                             prometheus::Registry& registry, const prometheus::Labels& labels)
    : options_(std::move(options)),
      config_(std::move(config)),
      ranks_(ranks),
      tokenizer_(std::move(tokenizer)),
      tokenizer_config_(std::move(tokenizer_config)),
      metrics_(std::make_unique<Metrics>(registry, labels)) {}

RouterService::~RouterService() = default;

std::string RouterService::NewRequestId() {
  static const uint64_t process_salt = std::random_device{}();
  return absl::StrCat("req-", absl::Hex(process_salt & 0xffffff), "-", next_id_.fetch_add(1));
}

absl::StatusOr<std::vector<int32_t>> RouterService::ChatIds(const xpd::v1::Chat& chat) const {
  if (tokenizer_ == nullptr || tokenizer_config_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("chat requests need a tokenizer: ", options_.tokenizer_error));
  }
  std::vector<tokenizer::ChatMessage> messages;
  for (const xpd::v1::ChatMessage& m : chat.messages()) {
    tokenizer::ChatMessage message{.role = m.role()};
    if (m.has_content()) message.content = m.content();
    for (const xpd::v1::ToolCall& call : m.tool_calls()) {
      message.tool_calls.push_back({.type = call.type().empty() ? "function" : call.type(),
                                    .name = call.name(),
                                    .arguments = call.arguments()});
    }
    messages.push_back(std::move(message));
  }
  XPD_ASSIGN_OR_RETURN(
      tokenizer::RenderedChat rendered,
      tokenizer::ApplyChatTemplate(*tokenizer_, *tokenizer_config_, messages,
                                   {.add_generation_prompt = chat.add_generation_prompt()}));
  return rendered.ids;
}

absl::StatusOr<std::vector<int32_t>> RouterService::PromptIds(
    const xpd::v1::GenerateRequest& request) const {
  std::vector<int32_t> ids;
  switch (request.prompt_case()) {
    case xpd::v1::GenerateRequest::kTokens:
      ids.assign(request.tokens().ids().begin(), request.tokens().ids().end());
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= config_.vocab_size) {
          return absl::InvalidArgumentError(absl::StrCat("tokens.ids[", i, "]: ", ids[i],
                                                         " outside the vocabulary [0, ",
                                                         config_.vocab_size, ")"));
        }
      }
      break;
    case xpd::v1::GenerateRequest::kText: {
      if (tokenizer_ == nullptr) {
        return absl::FailedPreconditionError(
            absl::StrCat("text prompts need a tokenizer: ", options_.tokenizer_error));
      }
      XPD_ASSIGN_OR_RETURN(ids, tokenizer_->Encode(request.text()));
      if (tokenizer_config_ != nullptr && tokenizer_config_->add_bos_token()) {
        ids.insert(ids.begin(), static_cast<int32_t>(config_.bos_token_id));
      }
      break;
    }
    case xpd::v1::GenerateRequest::kChat: {
      XPD_ASSIGN_OR_RETURN(ids, ChatIds(request.chat()));
      break;
    }
    case xpd::v1::GenerateRequest::PROMPT_NOT_SET:
      return absl::InvalidArgumentError("prompt: one of text, tokens or chat is required");
  }
  if (ids.empty()) return absl::InvalidArgumentError("prompt: empty after tokenization");
  return ids;
}

int64_t RouterService::ServedContext() {
  const int64_t kv_tokens = ranks_.MaxDecodeKvBlocks() * options_.kv_block_size;
  if (kv_tokens <= 0) return config_.max_position_embeddings;
  return std::min<int64_t>(config_.max_position_embeddings, kv_tokens);
}

absl::Status RouterService::ValidateSampling(const xpd::v1::SamplingParams& s, int64_t prompt) {
  if (s.max_tokens() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.max_tokens must be >= 1, got ", s.max_tokens()));
  }
  const int64_t context = ServedContext();
  if (prompt + s.max_tokens() > context) {
    // Beyond the largest decode rank's KV cache no rank could ever take the
    // request: that is a bad request, not a full cache (RESOURCE_EXHAUSTED).
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", prompt, " tokens) + sampling.max_tokens (", s.max_tokens(), ") exceeds ",
        context == config_.max_position_embeddings
            ? absl::StrCat("the model's context of ", context, " tokens")
            : absl::StrCat("the served context of ", context,
                           " tokens (the KV cache of the largest decode rank; the model's "
                           "context is ",
                           config_.max_position_embeddings, ")")));
  }
  if (s.top_logprobs() < 0 || s.top_logprobs() > 20) {
    return absl::InvalidArgumentError("sampling.top_logprobs must be in [0, 20]");
  }
  const runtime::SamplingParams params = rpc::ToSamplingParams(s);
  if (absl::Status status = runtime::ValidateSamplingParams(params); !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling: ", status.message()));
  }
  return absl::OkStatus();
}

grpc::Status RouterService::Tokenize(grpc::ServerContext*, const xpd::v1::TokenizeRequest* request,
                                     xpd::v1::TokenizeResponse* response) {
  absl::StatusOr<std::vector<int32_t>> ids;
  if (request->input_case() == xpd::v1::TokenizeRequest::kChat) {
    ids = ChatIds(request->chat());
  } else if (tokenizer_ == nullptr) {
    ids = absl::FailedPreconditionError(
        absl::StrCat("tokenizing needs a tokenizer: ", options_.tokenizer_error));
  } else {
    ids = tokenizer_->Encode(request->text());
  }
  if (!ids.ok()) return rpc::ToGrpcStatus(ids.status());
  response->mutable_ids()->Assign(ids->begin(), ids->end());
  return grpc::Status::OK;
}

grpc::Status RouterService::Detokenize(grpc::ServerContext*,
                                       const xpd::v1::DetokenizeRequest* request,
                                       xpd::v1::DetokenizeResponse* response) {
  if (tokenizer_ == nullptr) {
    return rpc::ToGrpcStatus(absl::FailedPreconditionError(
        absl::StrCat("detokenizing needs a tokenizer: ", options_.tokenizer_error)));
  }
  response->set_text(tokenizer_->Decode({request->ids().begin(), request->ids().end()},
                                        request->skip_special_tokens()));
  return grpc::Status::OK;
}

grpc::Status RouterService::ListModels(grpc::ServerContext*, const xpd::v1::ListModelsRequest*,
                                       xpd::v1::ListModelsResponse* response) {
  xpd::v1::ModelInfo* model = response->add_models();
  model->set_id(options_.model_id);
  model->set_context_length(ServedContext());
  model->set_vocab_size(config_.vocab_size);
  return grpc::Status::OK;
}

xpd::v1::Prefill::Stub& RouterService::PrefillStub(const std::string& address) {
  absl::MutexLock lock(&stubs_mutex_);
  auto& stub = prefill_stubs_[address];
  if (!stub) {
    stub =
        xpd::v1::Prefill::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }
  return *stub;
}

xpd::v1::Decode::Stub& RouterService::DecodeStub(const std::string& address) {
  absl::MutexLock lock(&stubs_mutex_);
  auto& stub = decode_stubs_[address];
  if (!stub) {
    stub =
        xpd::v1::Decode::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }
  return *stub;
}

}  // namespace xpd::router
