// When the verify schedule (server/verify_schedule.h) verifies a volume: one period after its
// last verify began, or, never verified, one period after backupd started.
#include "server/verify_schedule.h"

#include <gtest/gtest.h>

namespace bkp::server {
namespace {

TEST(VerifyScheduleTest, DueOnePeriodAfterTheLastVerifyOrTheStart) {
  constexpr int64_t kHour = 3'600'000;
  EXPECT_EQ(next_verify_ms(std::nullopt, 1'000, kHour), 1'000 + kHour);
  EXPECT_EQ(next_verify_ms(500, 1'000, kHour), 500 + kHour);  // verified before this start
  EXPECT_EQ(next_verify_ms(5'000, 1'000, kHour), 5'000 + kHour);
}

}  // namespace
}  // namespace bkp::server
