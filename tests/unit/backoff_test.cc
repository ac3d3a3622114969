// Backoff: the minimum wait throughout the fast window of an outage, doubling up to the maximum
// after it, and a fresh outage after reset(). The windows are 0 or an hour, so no result
// depends on how fast the test runs.
#include <gtest/gtest.h>

#include "common/backoff.h"

namespace bkp {
namespace {

using Ms = std::chrono::milliseconds;

TEST(BackoffTest, RetriesAtTheMinimumThroughoutTheFastWindow) {
  Backoff b(Ms(100), Ms(1000), std::chrono::hours(1));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(b.next(), Ms(100));
}

TEST(BackoffTest, DoublesUpToTheMaximumAfterTheWindowAndStartsOverAfterReset) {
  Backoff b(Ms(100), Ms(1000), Ms(0));
  EXPECT_EQ(b.next(), Ms(200));
  EXPECT_EQ(b.next(), Ms(400));
  EXPECT_EQ(b.next(), Ms(800));
  EXPECT_EQ(b.next(), Ms(1000));
  EXPECT_EQ(b.next(), Ms(1000));
  b.reset();
  EXPECT_EQ(b.next(), Ms(200));
}

}  // namespace
}  // namespace bkp
