// Cluster benchmark (not a test): generated tokens/s of the disaggregated
// cluster (1 prefill + 1 decode rank, real processes on loopback, reached
// through the client SDK) against the single-process engine, at several
// concurrencies, measured in the same run.
//   cluster_bench [--model DIR] [--prompt-tokens 128] [--gen-tokens 64]
//                 [--threads-per-rank 1] [--engine-threads N] [--concurrency 1,4,16]
//                 [--seed 1]
// Without --model it uses (and first generates, if missing) the `small`
// preset in ${TMPDIR:-/tmp}/xpd-small-preset.
//
// Both sides see the same C requests (random prompts, greedy, ignore_eos) and
// are timed the way a serving client sees them: total completion tokens over
// the wall time from submitting the first request to the last token of the
// last one (prefill included). The engine gets all C requests as one batch;
// the cluster gets C concurrent streams. The engine and the cluster runs of a
// point follow each other, so load drift on a shared machine hits both alike.
// Also prints whether the cluster's greedy tokens equal the engine's.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/base/command_flags.h"
#include "common/base/status_macros.h"
#include "common/runtime/generator.h"
#include "common/runtime/model_session.h"
#include "nlohmann/json.hpp"
#include "tests/integration/local_cluster.h"

namespace xpd::testing {
namespace {

constexpr absl::Duration kRequestTimeout = absl::Minutes(10);

struct StreamResult {
  absl::Status status;
  std::vector<int32_t> tokens;
  int64_t completion_tokens = 0;
  double ttft_seconds = 0;  // call start to the first response carrying tokens
};

struct Point {
  int64_t concurrency = 0;
  int64_t engine_tokens = 0, cluster_tokens = 0;
  double engine_seconds = 0, cluster_seconds = 0;
  double engine_ttft_seconds = 0;  // the batched prefill: every first token comes after it
  double cluster_mean_ttft_seconds = 0;
  int64_t matching = 0;  // requests whose cluster tokens equal the engine's
  std::string first_mismatch;
  double engine_tps() const { return engine_tokens / engine_seconds; }
  double cluster_tps() const { return cluster_tokens / cluster_seconds; }
};

// The default model: the `small` preset, written once by the xpd binary of
// this build (so its layout always matches the loader).
absl::StatusOr<std::string> DefaultModel() {
  const char* tmp = std::getenv("TMPDIR");
  const std::string dir =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/xpd-small-preset");
  if (std::filesystem::exists(dir + "/config.json")) return dir;
  const std::string command =
      absl::StrCat(XPD_BINARY_DIR, "/xpd dummy-model --preset small --out '", dir, "'");
  std::cerr << "generating the small preset: " << command << "\n";
  if (std::system(command.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("'", command, "' failed"));
  }
  return dir;
}

xpd::v1::GenerateRequest ToProto(const runtime::GenerateRequest& request) {
  xpd::v1::GenerateRequest proto;
  proto.mutable_tokens()->mutable_ids()->Assign(request.prompt.begin(), request.prompt.end());
  proto.mutable_sampling()->set_max_tokens(static_cast<int32_t>(request.max_tokens));
  proto.mutable_sampling()->set_temperature(0.0f);
  proto.mutable_sampling()->set_ignore_eos(true);
  return proto;
}

StreamResult RunStream(client::GenerationClient& client, const xpd::v1::GenerateRequest& request) {
  StreamResult result;
  const absl::Time start = absl::Now();
  bool first = true;
  result.status = client.GenerateStream(
      request,
      [&](const xpd::v1::GenerateResponse& response) {
        if (first && response.token_ids_size() > 0) {
          result.ttft_seconds = absl::ToDoubleSeconds(absl::Now() - start);
          first = false;
        }
        result.tokens.insert(result.tokens.end(), response.token_ids().begin(),
                             response.token_ids().end());
        if (response.has_usage()) result.completion_tokens = response.usage().completion_tokens();
        return true;
      },
      {.timeout = kRequestTimeout});
  return result;
}

absl::Status Run(const std::vector<std::string>& args) {
  XPD_ASSIGN_OR_RETURN(
      base::CommandFlags flags,
      base::CommandFlags::Parse(args,
                                {"model", "prompt-tokens", "gen-tokens", "threads-per-rank",
                                 "engine-threads", "concurrency", "seed"},
                                {}));
  XPD_ASSIGN_OR_RETURN(int64_t prompt_tokens, flags.GetInt("prompt-tokens", 128));
  XPD_ASSIGN_OR_RETURN(int64_t gen_tokens, flags.GetInt("gen-tokens", 64));
  XPD_ASSIGN_OR_RETURN(int64_t threads_per_rank, flags.GetInt("threads-per-rank", 1));
  // The engine is one process like one rank, so by default it gets one
  // rank's threads; the cluster then uses twice the cores (two ranks).
  XPD_ASSIGN_OR_RETURN(int64_t engine_threads, flags.GetInt("engine-threads", threads_per_rank));
  XPD_ASSIGN_OR_RETURN(int64_t seed, flags.GetInt("seed", 1));
  std::vector<int64_t> concurrencies = {1, 4, 16};
  if (flags.Has("concurrency")) {
    XPD_ASSIGN_OR_RETURN(concurrencies, flags.GetIntList("concurrency"));
  }
  if (prompt_tokens < 1 || gen_tokens < 1 || threads_per_rank < 0 || engine_threads < 0 ||
      concurrencies.empty()) {
    return absl::InvalidArgumentError(
        "--prompt-tokens and --gen-tokens must be >= 1, thread counts >= 0, --concurrency set");
  }
  int64_t max_concurrency = 0;
  for (const int64_t c : concurrencies) {
    if (c < 1 || c > 256) return absl::InvalidArgumentError("--concurrency: each in [1, 256]");
    max_concurrency = std::max(max_concurrency, c);
  }
  std::string model_dir;
  if (flags.Has("model")) {
    XPD_ASSIGN_OR_RETURN(model_dir, flags.GetString("model"));
  } else {
    XPD_ASSIGN_OR_RETURN(model_dir, DefaultModel());
  }

  // The engine: the same loader, precision (f32, the ranks' default too) and
  // KV block size as a rank, sized for the largest batch.
  XPD_ASSIGN_OR_RETURN(
      base::CommandFlags session_flags,
      base::CommandFlags::Parse({"--model", model_dir, "--threads", std::to_string(engine_threads)},
                                runtime::kModelValueFlags, {}));
  const int64_t per_sequence = (prompt_tokens + gen_tokens + 63) / 64 * 64;
  XPD_ASSIGN_OR_RETURN(
      runtime::ModelSession session,
      runtime::OpenModelSession(session_flags, {.kv_tokens = max_concurrency * per_sequence}));
  const int64_t vocab = session.model->config().vocab_size;
  runtime::Generator generator(*session.model, *session.pool);

  // Deterministic pseudo-random prompts, one per stream; point C uses the
  // first C of them.
  uint64_t state = static_cast<uint64_t>(seed);
  auto next_token = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(vocab));
  };
  std::vector<runtime::GenerateRequest> requests(max_concurrency);
  for (runtime::GenerateRequest& r : requests) {
    for (int64_t i = 0; i < prompt_tokens; ++i) r.prompt.push_back(next_token());
    r.max_tokens = gen_tokens;
    r.ignore_eos = true;
    r.sampling.temperature = 0.0f;
  }

  LocalCluster cluster({.model = model_dir, .threads = static_cast<int>(threads_per_rank)});
  XPD_RETURN_IF_ERROR(cluster.Start());

  // Warm-up on both: pages in the mmap'ed weights and the experts a full
  // prompt reaches, so the first point does not pay for them.
  runtime::GenerateRequest warmup = requests[0];
  warmup.max_tokens = 2;
  XPD_RETURN_IF_ERROR(generator.Generate({warmup}).status());
  XPD_RETURN_IF_ERROR(RunStream(cluster.client(), ToProto(warmup)).status);

  std::vector<Point> points;
  for (const int64_t c : concurrencies) {
    Point point{.concurrency = c};
    const std::vector<runtime::GenerateRequest> batch(requests.begin(), requests.begin() + c);

    runtime::GenerateTimings timings;
    const absl::Time engine_start = absl::Now();
    XPD_ASSIGN_OR_RETURN(std::vector<runtime::GenerateResult> engine,
                         generator.Generate(batch, &timings));
    point.engine_seconds = absl::ToDoubleSeconds(absl::Now() - engine_start);
    point.engine_ttft_seconds = timings.prefill_seconds;
    for (const runtime::GenerateResult& r : engine) point.engine_tokens += r.tokens.size();

    std::vector<std::future<StreamResult>> futures;
    const absl::Time cluster_start = absl::Now();
    for (const runtime::GenerateRequest& r : batch) {
      futures.push_back(
          std::async(std::launch::async, RunStream, std::ref(cluster.client()), ToProto(r)));
    }
    std::vector<StreamResult> streams;
    for (auto& future : futures) streams.push_back(future.get());
    point.cluster_seconds = absl::ToDoubleSeconds(absl::Now() - cluster_start);

    double ttft_sum = 0;
    for (int64_t i = 0; i < c; ++i) {
      const StreamResult& s = streams[i];
      if (!s.status.ok()) {
        return absl::Status(s.status.code(), absl::StrCat("cluster stream ", i, " at C=", c, ": ",
                                                          s.status.message()));
      }
      point.cluster_tokens += s.completion_tokens;
      ttft_sum += s.ttft_seconds;
      if (s.tokens == engine[i].tokens) {
        ++point.matching;
      } else if (point.first_mismatch.empty()) {
        size_t at = 0;
        while (at < s.tokens.size() && at < engine[i].tokens.size() &&
               s.tokens[at] == engine[i].tokens[at]) {
          ++at;
        }
        point.first_mismatch =
            absl::StrFormat("request %d differs at token %d (cluster %d tokens, engine %d)", i, at,
                            s.tokens.size(), engine[i].tokens.size());
      }
    }
    point.cluster_mean_ttft_seconds = ttft_sum / c;
    std::cerr << absl::StrFormat("C=%d: engine %.1f tok/s, cluster %.1f tok/s\n", c,
                                 point.engine_tps(), point.cluster_tps());
    points.push_back(point);
  }
  const std::vector<std::string> unclean = cluster.Stop();

  std::cout << absl::StrFormat(
      "%s: %d prompt + %d generated tokens per stream, greedy, f32; engine %d thread(s), "
      "cluster 1 prefill + 1 decode rank x %d thread(s)\n",
      model_dir, prompt_tokens, gen_tokens, engine_threads, threads_per_rank);
  std::cout << absl::StrFormat("%4s %12s %12s %9s %11s %12s %9s\n", "C", "engine tok/s",
                               "cluster tok/s", "cl/eng", "engine TTFT", "cluster TTFT",
                               "greedy eq");
  nlohmann::json results = nlohmann::json::array();
  for (const Point& p : points) {
    const double ratio = p.cluster_tps() / p.engine_tps();
    std::cout << absl::StrFormat("%4d %12.2f %13.2f %9.3f %10.2fs %11.2fs %6d/%d\n", p.concurrency,
                                 p.engine_tps(), p.cluster_tps(), ratio, p.engine_ttft_seconds,
                                 p.cluster_mean_ttft_seconds, p.matching, p.concurrency);
    if (!p.first_mismatch.empty()) {
      std::cout << "     greedy mismatch at C=" << p.concurrency << ": " << p.first_mismatch
                << "\n";
    }
    results.push_back({{"concurrency", p.concurrency},
                       {"engine_tokens_per_s", p.engine_tps()},
                       {"cluster_tokens_per_s", p.cluster_tps()},
                       {"cluster_over_engine", ratio},
                       {"engine_seconds", p.engine_seconds},
                       {"cluster_seconds", p.cluster_seconds},
                       {"engine_tokens", p.engine_tokens},
                       {"cluster_tokens", p.cluster_tokens},
                       {"engine_ttft_s", p.engine_ttft_seconds},
                       {"cluster_mean_ttft_s", p.cluster_mean_ttft_seconds},
                       {"greedy_matching", p.matching}});
  }
  const nlohmann::json out = {{"bench", "cluster"},
                              {"model", model_dir},
                              {"prompt_tokens", prompt_tokens},
                              {"gen_tokens", gen_tokens},
                              {"engine_threads", engine_threads},
                              {"threads_per_rank", threads_per_rank},
                              {"results", results},
                              {"unclean_exits", unclean}};
  std::cout << out.dump() << std::endl;
  return absl::OkStatus();
}

}  // namespace
}  // namespace xpd::testing

int main(int argc, char** argv) {
  return xpd::base::ExitStatus("cluster_bench", xpd::testing::Run({argv + 1, argv + argc}));
}
