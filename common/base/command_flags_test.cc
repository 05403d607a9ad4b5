#include "common/base/command_flags.h"

#include <cstdio>
#include <string>

#include "gtest/gtest.h"

namespace xpd::base {
namespace {

TEST(CommandFlagsTest, ValuesSwitchesAndErrorsNameTheFlag) {
  absl::StatusOr<CommandFlags> flags =
      CommandFlags::Parse({"--port", "7", "--host=a", "--verbose"}, {"port", "host"}, {"verbose"});
  ASSERT_TRUE(flags.ok()) << flags.status();
  EXPECT_EQ(*flags->GetInt("port", std::nullopt), 7);
  EXPECT_EQ(flags->GetString("host", ""), "a");
  EXPECT_TRUE(flags->Has("verbose"));
  const absl::Status unknown = CommandFlags::Parse({"--prot", "7"}, {"port"}, {}).status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(unknown.message(), "unknown flag --prot");
  EXPECT_FALSE(IsHelpRequest(unknown));
  EXPECT_EQ(ExitStatus("test", unknown), 2);
}

TEST(CommandFlagsTest, HelpAnywhereListsEveryFlagAndExitsZero) {
  for (const char* help : {"--help", "-h"}) {
    const absl::Status status =
        CommandFlags::Parse({"--port", "7", help, "--bogus"}, {"port", "host"}, {"verbose"})
            .status();
    ASSERT_TRUE(IsHelpRequest(status)) << status;
    EXPECT_EQ(status.message(), "flags:\n  --host VALUE\n  --port VALUE\n  --verbose\n");
    // Printed to stdout, not as an error.
    std::fflush(stdout);
    testing::internal::CaptureStdout();
    EXPECT_EQ(ExitStatus("test", status), 0);
    EXPECT_EQ(testing::internal::GetCapturedStdout(),
              "usage: xpd test [flags]\nflags:\n  --host VALUE\n  --port VALUE\n  --verbose\n");
  }
}

}  // namespace
}  // namespace xpd::base
