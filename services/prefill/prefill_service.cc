#include "services/prefill/prefill_service.h"

#include <chrono>
#include <future>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/metrics/metrics_server.h"
#include "common/rpc/sampling_conversion.h"
#include "common/rpc/status_conversion.h"
#include "prometheus/family.h"

namespace xpd::prefill {
PrefillService::PrefillService(runtime::PrefillScheduler& scheduler,
                               transport::KvTransport& transport, prometheus::Registry& registry,
                               const prometheus::Labels& labels)
    : scheduler_(scheduler),
      transport_(transport),
      prompt_tokens_(prometheus::BuildCounter()
                         .Name("xpd_prompt_tokens_total")
                         .Help("Prompt tokens prefilled on this rank")
                         .Register(registry)
                         .Add(labels)),
      kv_bytes_(prometheus::BuildCounter()
                    .Name("xpd_kv_transfer_bytes_total")
                    .Help("Latent KV bytes sent to decode ranks")
                    .Register(registry)
                    .Add(labels)),
      kv_seconds_(prometheus::BuildHistogram()
                      .Name("xpd_kv_transfer_seconds")
                      .Help("Time to ship one request's latent KV to its decode rank")
                      .Register(registry)
                      .Add(labels, metrics::LatencyBuckets())),
      queued_(prometheus::BuildGauge()
                  .Name("xpd_requests_waiting")
                  .Help("Requests queued or being prefilled on this rank")
                  .Register(registry)
                  .Add(labels)),
      outstanding_tokens_(prometheus::BuildGauge()
                              .Name("xpd_prefill_outstanding_tokens")
                              .Help("Prompt tokens queued and not yet computed")
                              .Register(registry)
                              .Add(labels)) {}

xpd::v1::RankLoad PrefillService::Load() {
  const runtime::PrefillStats stats = scheduler_.stats();
  queued_.Set(stats.queued);
  outstanding_tokens_.Set(static_cast<double>(stats.outstanding_tokens));
  xpd::v1::RankLoad load;
  load.set_queued_requests(stats.queued);
  load.set_outstanding_prefill_tokens(stats.outstanding_tokens);
  return load;
}

grpc::Status PrefillService::Prefill(grpc::ServerContext* context,
                                     const xpd::v1::PrefillRequest* request,
                                     xpd::v1::PrefillResponse* response) {
  const std::string& id = request->request_id();
  auto done = std::make_shared<std::promise<absl::StatusOr<runtime::PrefillResult>>>();
  std::future<absl::StatusOr<runtime::PrefillResult>> result_future = done->get_future();
  absl::Status submitted =
      scheduler_.Submit(id, {request->prompt().begin(), request->prompt().end()},
                        rpc::ToSamplingParams(request->sampling()),
                        [done](absl::StatusOr<runtime::PrefillResult> result) {
                          done->set_value(std::move(result));
                        });
  if (!submitted.ok()) return rpc::ToGrpcStatus(submitted);
  // Wake up now and then to notice a caller that went away.
  bool cancelled = false;
  while (result_future.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
    if (!cancelled && context->IsCancelled()) {
      scheduler_.Cancel(id);
      cancelled = true;
    }
  }
  absl::StatusOr<runtime::PrefillResult> result = result_future.get();
  if (!result.ok()) return rpc::ToGrpcStatus(result.status());
  prompt_tokens_.Increment(static_cast<double>(result->num_tokens));

  const absl::Time start = absl::Now();
  const absl::Time deadline =
      absl::FromChrono(context->deadline()) < absl::Now() + absl::Hours(24 * 365)
          ? absl::FromChrono(context->deadline())
          : absl::InfiniteFuture();
  absl::StatusOr<int64_t> bytes = transport_.Send(request->decode_address(), id,
                                                  {.num_layers = result->num_layers,
                                                   .latent_dim = result->latent_dim,
                                                   .num_tokens = result->num_tokens,
                                                   .data = result->kv},
                                                  deadline);
  if (!bytes.ok()) {
    return rpc::ToGrpcStatus(absl::Status(
        bytes.status().code(), absl::StrCat("sending KV to decode rank ", request->decode_address(),
                                            ": ", bytes.status().message())));
  }
  kv_bytes_.Increment(static_cast<double>(*bytes));
  kv_seconds_.Observe(absl::ToDoubleSeconds(absl::Now() - start));

  rpc::ToTokenLogprob(result->first_token, response->mutable_first_token());
  response->set_kv_bytes(*bytes);
  return grpc::Status::OK;
}

}  // namespace xpd::prefill
