// xpd.v1.Generation on the router: validates and tokenizes requests, admits
// them into a bounded number of in-flight slots, reserves KV on a decode
// rank, has a prefill rank compute the prompt and ship its KV there, then
// relays the decode rank's token stream as text deltas with stop strings.
// Client deadlines and cancellation propagate to both ranks.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/model/model_config.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/tokenizer.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "services/router/rank_directory.h"
#include "xpd/v1/cluster.grpc.pb.h"
#include "xpd/v1/generation.grpc.pb.h"

namespace xpd::router {

struct RouterOptions {
  std::string model_id = "default";
  int32_t max_in_flight = 256;  // RESOURCE_EXHAUSTED beyond
  int32_t kv_block_size = 64;   // decode ranks' page size (for rank choice)
  std::string tokenizer_error;  // why there is no tokenizer (for FAILED_PRECONDITION)
};

class RouterService final : public xpd::v1::Generation::Service {
 public:
  // `tokenizer` and `tokenizer_config` may be null: token-id requests still work.
  RouterService(RouterOptions options, model::ModelConfig config, RankDirectory& ranks,
                std::unique_ptr<tokenizer::Tokenizer> tokenizer,
                std::unique_ptr<tokenizer::TokenizerConfig> tokenizer_config,
                prometheus::Registry& registry, const prometheus::Labels& labels);
  ~RouterService() override;

  grpc::Status Generate(grpc::ServerContext* context, const xpd::v1::GenerateRequest* request,
                        grpc::ServerWriter<xpd::v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const xpd::v1::TokenizeRequest* request,
                        xpd::v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext* context, const xpd::v1::DetokenizeRequest* request,
                          xpd::v1::DetokenizeResponse* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const xpd::v1::ListModelsRequest* request,
                          xpd::v1::ListModelsResponse* response) override;

  // The most tokens (prompt + completion) one request can use: the model's
  // context, capped by the KV cache of the largest healthy decode rank (a
  // request reserves KV for every position it can reach before it starts).
  // ListModels reports it as context_length; Generate validates against it.
  int64_t ServedContext();

 private:
  struct Metrics;
  class GenerateCall;  // one request's life (router_generate.cc)

  absl::StatusOr<std::vector<int32_t>> PromptIds(const xpd::v1::GenerateRequest& request) const;
  absl::StatusOr<std::vector<int32_t>> ChatIds(const xpd::v1::Chat& chat) const;
  absl::Status ValidateSampling(const xpd::v1::SamplingParams& sampling, int64_t prompt);
  xpd::v1::Prefill::Stub& PrefillStub(const std::string& address);
  xpd::v1::Decode::Stub& DecodeStub(const std::string& address);
  std::string NewRequestId();

  RouterOptions options_;
  model::ModelConfig config_;
  RankDirectory& ranks_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<tokenizer::TokenizerConfig> tokenizer_config_;
  std::unique_ptr<Metrics> metrics_;
  std::atomic<int32_t> in_flight_{0};
  std::atomic<uint64_t> next_id_{0};
  absl::Mutex stubs_mutex_;
  absl::flat_hash_map<std::string, std::unique_ptr<xpd::v1::Prefill::Stub>> prefill_stubs_
      ABSL_GUARDED_BY(stubs_mutex_);
  absl::flat_hash_map<std::string, std::unique_ptr<xpd::v1::Decode::Stub>> decode_stubs_
      ABSL_GUARDED_BY(stubs_mutex_);
};

}  // namespace xpd::router
