#include "services/router/stop_string_filter.h"

#include "gtest/gtest.h"

namespace xpd::router {
namespace {

TEST(StopStringFilterTest, PassesTextThroughWithoutStops) {
  StopStringFilter filter({});
  EXPECT_EQ(filter.Add("Hello"), "Hello");
  EXPECT_EQ(filter.Add(", world"), ", world");
  EXPECT_EQ(filter.Flush(), "");
  EXPECT_FALSE(filter.stopped());
}

TEST(StopStringFilterTest, StopsAcrossChunkBoundariesAndDropsTheStop) {
  StopStringFilter filter({"END", "\n\n"});
  EXPECT_EQ(filter.Add("abc E"), "abc ");  // "E" could start "END"
  EXPECT_EQ(filter.Add("N"), "");
  EXPECT_EQ(filter.Add("Dxyz"), "");
  EXPECT_TRUE(filter.stopped());
  EXPECT_EQ(filter.Add("more"), "");
  EXPECT_EQ(filter.Flush(), "");
}

TEST(StopStringFilterTest, ReleasesHeldTextWhenItStopsMatching) {
  StopStringFilter filter({"END"});
  EXPECT_EQ(filter.Add("xE"), "x");
  EXPECT_EQ(filter.Add("NX"), "ENX");
  EXPECT_EQ(filter.Add("EN"), "");
  EXPECT_EQ(filter.Flush(), "EN");
}

TEST(StopStringFilterTest, EarliestStopWins) {
  StopStringFilter filter({"cd", "b"});
  EXPECT_EQ(filter.Add("abcd"), "a");
  EXPECT_TRUE(filter.stopped());
}

}  // namespace
}  // namespace xpd::router
