// Exposition (common/metrics.h): samples of one family come out together under one HELP and TYPE
// whatever order they were added in, label values and help text are escaped as the Prometheus
// text format requires, and whole numbers print without a fraction.
#include "common/metrics.h"

#include <gtest/gtest.h>

namespace bkp::metrics {
namespace {

TEST(MetricsTest, FamiliesAreGroupedAndEscaped) {
  Exposition m;
  m.gauge("a_bytes", "A's size.", {{"path", "/x"}}, 1);
  m.counter("b_total", "B's count,\nby \\ path.", {}, 2.5);
  m.gauge("a_bytes", "ignored: the first help stays", {{"path", "q\"u\\o\nte"}}, 3e20);
  EXPECT_EQ(m.text(),
            "# HELP a_bytes A's size.\n"
            "# TYPE a_bytes gauge\n"
            "a_bytes{path=\"/x\"} 1\n"
            "a_bytes{path=\"q\\\"u\\\\o\\nte\"} 3e+20\n"
            "# HELP b_total B's count,\\nby \\\\ path.\n"
            "# TYPE b_total counter\n"
            "b_total 2.5\n");
}

TEST(MetricsTest, ProcessMetricsArePresent) {
  Exposition m;
  add_process_metrics(m);
  const std::string text = m.text();
  for (const char* name : {"process_resident_memory_bytes ", "process_open_fds ",
                           "process_cpu_seconds_total ", "process_start_time_seconds "}) {
    EXPECT_NE(text.find(std::string("\n") + name), std::string::npos) << name << "\n" << text;
  }
}

}  // namespace
}  // namespace bkp::metrics
