// Rejections (rejections.h): a flood of bad connections from one address logs kRejectionBurst
// lines per kRejectionQuiet at most, and the next line counts what was not logged; other
// addresses are not held back by it.
#include "server/rejections.h"

#include <gtest/gtest.h>

namespace bkp::server {
namespace {

TEST(RejectionsTest, AFloodFromOneAddressLogsAFewLinesPerPeriodThenTheCountLeftOut) {
  Rejections r;
  auto t0 = Rejections::Clock::time_point{} + std::chrono::hours(1);
  EXPECT_EQ(r.line("10.0.0.1:5000", "no hello within 3 s", t0),
            "connection from 10.0.0.1:5000 rejected: no hello within 3 s");
  for (int i = 1; i < 200; ++i) {
    auto line = r.line("10.0.0.1:" + std::to_string(5000 + i), "no hello within 3 s",
                       t0 + std::chrono::milliseconds(i));
    EXPECT_EQ(line.has_value(), static_cast<uint64_t>(i) < kRejectionBurst) << i;
  }
  EXPECT_EQ(r.line("10.0.0.2:7000", "TLS handshake failed", t0 + std::chrono::seconds(1)),
            "connection from 10.0.0.2:7000 rejected: TLS handshake failed")
      << "another address is not held back";
  EXPECT_EQ(r.line("10.0.0.1:6000", "TLS handshake failed", t0 + kRejectionQuiet),
            "connection from 10.0.0.1:6000 rejected: TLS handshake failed (195 more from "
            "10.0.0.1 rejected since the last such line, not logged)");
  EXPECT_EQ(r.line("10.0.0.1:6001", "x", t0 + kRejectionQuiet + std::chrono::seconds(1)),
            "connection from 10.0.0.1:6001 rejected: x")
      << "the count is given once";
  EXPECT_EQ(r.line("[::1]:9", "x", t0), "connection from [::1]:9 rejected: x");
}

}  // namespace
}  // namespace bkp::server
