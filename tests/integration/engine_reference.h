// What the cluster tests compare against: the single-process engine's greedy
// output for the same requests (architecture invariant 1), the request that
// asks a cluster for exactly that, and a way to send many at once.
#pragma once

#include <future>
#include <utility>
#include <vector>

#include "common/client/generation_client.h"
#include "common/runtime/generator.h"
#include "gtest/gtest.h"
#include "tests/model/fixture_model.h"
#include "xpd/v1/generation.pb.h"

namespace xpd::testing {

inline constexpr char kClusterTestModel[] = "tests/fixtures/dsv3-tiny/models/bf16";

inline xpd::v1::GenerateRequest TokenRequest(const std::vector<int32_t>& prompt,
                                             int32_t max_tokens) {
  xpd::v1::GenerateRequest request;
  request.mutable_tokens()->mutable_ids()->Assign(prompt.begin(), prompt.end());
  request.mutable_sampling()->set_max_tokens(max_tokens);
  request.mutable_sampling()->set_temperature(0.0f);
  request.mutable_sampling()->set_ignore_eos(true);
  return request;
}

// Greedy tokens of the single-process engine for each (prompt, max_tokens).
inline std::vector<std::vector<int32_t>> SingleProcessOutputs(
    const std::vector<std::pair<std::vector<int32_t>, int32_t>>& requests) {
  FixtureModel f = LoadFixtureModel("bf16");
  runtime::Generator generator(*f.model, *f.pool);
  std::vector<std::vector<int32_t>> outputs;
  for (const auto& [prompt, max_tokens] : requests) {
    runtime::GenerateRequest r{.prompt = prompt, .max_tokens = max_tokens, .ignore_eos = true};
    r.sampling.temperature = 0.0f;
    auto result = generator.Generate({r});
    EXPECT_TRUE(result.ok()) << result.status();
    outputs.push_back(result.ok() ? (*result)[0].tokens : std::vector<int32_t>{});
  }
  return outputs;
}

// Sends every request at once through `client` and waits for all of them.
inline std::vector<absl::StatusOr<client::GenerateResult>> GenerateConcurrently(
    client::GenerationClient& client,
    const std::vector<std::pair<std::vector<int32_t>, int32_t>>& requests) {
  std::vector<std::future<absl::StatusOr<client::GenerateResult>>> futures;
  for (const auto& [prompt, max_tokens] : requests) {
    futures.push_back(std::async(std::launch::async, [&client, &prompt, max_tokens] {
      return client.Generate(TokenRequest(prompt, max_tokens), {.timeout = absl::Seconds(120)});
    }));
  }
  std::vector<absl::StatusOr<client::GenerateResult>> results;
  for (auto& future : futures) results.push_back(future.get());
  return results;
}

}  // namespace xpd::testing
