// `xpd up` as a user runs it: one command starts the whole local cluster,
// prints "ready router=HOST:P", serves, and stops every process on SIGINT.
#include <signal.h>

#include "common/client/generation_client.h"
#include "gtest/gtest.h"
#include "services/cli/process_group.h"

namespace xpd::testing {
namespace {

TEST(XpdUpTest, ServesUntilInterruptedThenStopsCleanly) {
  cli::ProcessGroup group;
  auto up = group.Spawn("xpd up", {std::string(XPD_BINARY_DIR) + "/xpd", "up", "--model",
                                   "tests/fixtures/dsv3-tiny/models/fp8", "--prefill-ranks", "1",
                                   "--decode-ranks", "2", "--threads", "1"});
  ASSERT_TRUE(up.ok()) << up.status();
  absl::StatusOr<std::string> ready = group.ReadLine(*up, absl::Seconds(120));
  ASSERT_TRUE(ready.ok()) << ready.status();
  ASSERT_EQ(ready->rfind("ready router=", 0), 0u) << *ready;
  auto client = client::GenerationClient::Create(ready->substr(13));
  ASSERT_TRUE(client.ok());

  xpd::v1::GenerateRequest request;
  for (int id : {5, 17, 42}) request.mutable_tokens()->add_ids(id);
  request.mutable_sampling()->set_max_tokens(6);
  request.mutable_sampling()->set_temperature(0.0f);
  request.mutable_sampling()->set_ignore_eos(true);
  absl::StatusOr<client::GenerateResult> result = (*client)->Generate(request);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->token_ids.size(), 6u);
  absl::StatusOr<xpd::v1::ListModelsResponse> models = (*client)->ListModels();
  ASSERT_TRUE(models.ok());
  EXPECT_EQ(models->models(0).vocab_size(), 512);

  group.Signal(*up, SIGINT);
  group.Stop(absl::Seconds(60));
  EXPECT_TRUE(group.UncleanExits().empty());
}

}  // namespace
}  // namespace xpd::testing
