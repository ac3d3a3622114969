// Monitor (replicator/monitor.h): /metrics names each tree by host and path with what it applied
// and where it stands, and each server's link by its address; stats.json sums the trees and the
// links and keeps each one.
#include "replicator/monitor.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/testutil/temp_dir.h"

namespace bkp::replicator {
namespace {

constexpr int64_t kCommitMs = 1'700'000'001'000;
const std::vector<std::string> kServers{"10.0.0.1:7700", "10.0.0.2:7700"};

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

TEST(MonitorTest, MetricsNameEachTreeWithWhatItAppliedAndWhereItStands) {
  testutil::TempDir root;
  Monitor monitor(root.path(), kServers);
  TreeCounters& tree = monitor.tree("web1", "/srv/app");
  tree.opened(7, 0);
  tree.op();
  tree.op();
  tree.write(4096);
  tree.committed(8, kCommitMs);
  monitor.session_started("10.0.0.2:7700");
  const std::string text = monitor.metrics_text();
  const std::string vol = "{host=\"web1\",path=\"/srv/app\"}";
  const std::string one = "{server=\"10.0.0.1:7700\"}", two = "{server=\"10.0.0.2:7700\"}";
  EXPECT_TRUE(has_line(text, "replicator_backupd_up" + one + " 0")) << text;
  EXPECT_TRUE(has_line(text, "replicator_backupd_up" + two + " 1")) << text;
  EXPECT_TRUE(has_line(text, "replicator_backupd_sessions_total" + one + " 0")) << text;
  EXPECT_TRUE(has_line(text, "replicator_backupd_sessions_total" + two + " 1")) << text;
  EXPECT_TRUE(has_line(text, "replicator_volumes 1")) << text;
  EXPECT_TRUE(has_line(text, "replicator_volume_applied_bytes_total" + vol + " 4096")) << text;
  EXPECT_TRUE(has_line(text, "replicator_volume_applied_operations_total" + vol + " 2")) << text;
  EXPECT_TRUE(has_line(text, "replicator_volume_batches_total" + vol + " 1")) << text;
  EXPECT_TRUE(has_line(text, "replicator_volume_committed_batch" + vol + " 8")) << text;
  EXPECT_TRUE(has_line(text, "replicator_volume_last_commit_timestamp_seconds" + vol +
                                 " 1700000001"))
      << text;
  EXPECT_NE(text.find("\nreplicator_filesystem_avail_bytes "), std::string::npos) << text;
  EXPECT_NE(text.find("\nprocess_open_fds "), std::string::npos) << text;

  monitor.session_ended("10.0.0.2:7700");
  EXPECT_TRUE(has_line(monitor.metrics_text(), "replicator_backupd_up" + two + " 0"));
}

TEST(MonitorTest, ATreeNeverCommittedHasNoCommitTime) {
  testutil::TempDir root;
  Monitor monitor(root.path(), kServers);
  monitor.tree("web1", "/srv/app").opened(0, 0);
  const std::string text = monitor.metrics_text();
  EXPECT_EQ(text.find("replicator_volume_last_commit_timestamp_seconds{"), std::string::npos)
      << text;
  EXPECT_EQ(monitor.stats().second["volumes"]["web1:/srv/app"]["last_commit_at"], nullptr);
}

TEST(MonitorTest, StatsSumTheTreesAndKeepEachOne) {
  testutil::TempDir root;
  Monitor monitor(root.path(), kServers);
  monitor.tree("web1", "/a").write(100);
  monitor.tree("web2", "/b").write(20);
  monitor.tree("web2", "/b").committed(3, kCommitMs);
  monitor.tree("web1", "/a").reconcile();
  monitor.connect_failed("10.0.0.1:7700");
  monitor.connect_failed("10.0.0.2:7700");
  monitor.session_started("10.0.0.1:7700");
  auto [since_start, now] = monitor.stats();
  EXPECT_EQ(since_start["applied_bytes"], 120u) << since_start.dump(2);
  EXPECT_EQ(since_start["batches"], 1u);
  EXPECT_EQ(since_start["reconciles"], 1u);
  EXPECT_EQ(since_start["connect_failures"], 2u);
  EXPECT_EQ(since_start["sessions"], 1u);
  EXPECT_EQ(since_start["volumes"]["web1:/a"]["applied_bytes"], 100u);
  EXPECT_EQ(since_start["volumes"]["web2:/b"]["batches"], 1u);
  EXPECT_EQ(now["backupd_connected"], true) << "a session with one of the servers runs";
  EXPECT_EQ(now["servers"]["10.0.0.1:7700"]["connected"], true) << now.dump(2);
  EXPECT_EQ(now["servers"]["10.0.0.2:7700"]["connected"], false) << now.dump(2);
  EXPECT_EQ(now["volumes"]["web2:/b"]["committed_batch"], 3u);
  EXPECT_EQ(now["volumes"]["web2:/b"]["last_commit_at"], "2023-11-14T22:13:21Z");
}

}  // namespace
}  // namespace bkp::replicator
