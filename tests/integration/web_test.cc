// backupd's web side (issue 14, server/web.h), on a real cluster: backupd, two replicators and a
// mounted backupfs, backupd serving HTTP on a free loopback port (ClusterTest passes
// --http-listen 127.0.0.1:0).
//
//   - /metrics passes Prometheus' own checker (promtool check metrics, from Debian's prometheus
//     package) and follows the recovery point: a stopped replicator's lag rises while the source
//     changes, its copy stops counting as current, and both return once it resumes;
//   - /api/status names the volume with its copies and runs;
//   - a replicator's own /metrics (--metrics-listen) passes promtool too, counts what it applies
//     and shows its link to backupd going down and coming back;
//   - the page, in headless Chromium, shows the volume and follows the same replica falling
//     behind and catching up without a reload (web_page_check.py), and writes the screenshots
//     the README shows when BKP_WEB_SCREENSHOTS names a directory.
// Every wait is a condition with a deadline.
#include <signal.h>

#include <httplib.h>

#include <map>
#include <optional>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/files.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using testutil::wait_until;

constexpr uint64_t kMiB = 1024 * 1024;

class WebTest : public ClusterTest {
 protected:
  // GET of path on backupd's HTTP port (or on port): the body, or nullopt (the failure is added).
  std::optional<std::string> get(const std::string& path, uint16_t port = 0) {
    httplib::Client client("127.0.0.1", port != 0 ? port : http_port());
    client.set_connection_timeout(5);
    client.set_read_timeout(10);
    auto res = client.Get(path.c_str());
    if (!res) {
      ADD_FAILURE() << "GET " << path << ": " << httplib::to_string(res.error());
      return std::nullopt;
    }
    if (res->status != 200) {
      ADD_FAILURE() << "GET " << path << ": HTTP " << res->status;
      return std::nullopt;
    }
    return res->body;
  }

  // The samples of /metrics (backupd's, or on port): "name{labels}" -> value.
  std::map<std::string, double> samples(uint16_t port = 0) {
    std::map<std::string, double> out;
    auto text = get("/metrics", port);
    if (!text) return out;
    std::istringstream in(*text);
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line[0] == '#') continue;
      size_t space = line.rfind(' ');
      out[line.substr(0, space)] = std::stod(line.substr(space + 1));
    }
    return out;
  }

  // The labels of this test's volume, as /metrics writes them; with a replica's name if given.
  std::string volume_labels(const std::string& replica = "") const {
    std::string l = "{host=\"" + node_name + "\",path=\"" + src() + "\"";
    if (!replica.empty()) l += ",replica=\"" + replica + "\"";
    return l + "}";
  }

  double sample(const std::string& name, const std::string& labels, uint16_t port = 0) {
    auto s = samples(port);
    auto it = s.find(name + labels);
    return it == s.end() ? -1 : it->second;
  }

  // Prometheus' own checker accepts the exposition text.
  void expect_promtool_passes(const std::string& text) {
    std::string file = scratch_dir("metrics") + "/metrics.txt";
    testutil::write_file(file, text);
    auto check = testutil::run_command({"/bin/sh", "-c", "promtool check metrics < " + file});
    EXPECT_EQ(check.exit_code(), 0) << "promtool check metrics:\n" << check.output << "\n" << text;
  }
};

TEST_F(WebTest, MetricsPassPromtoolAndFollowAStoppedReplica) {
  ASSERT_TRUE(start_all());
  ASSERT_NE(http_port(), 0) << "no --http-port-file";
  write_big_file(src("data.bin"), 4 * kMiB, 1);
  ASSERT_EQ(wait_converged(), "");
  auto verified = bkptool({"verify", node_name, src()});  // its result is in /metrics too
  ASSERT_EQ(verified.exit_code(), 0) << verified.output;

  auto text = get("/metrics");
  ASSERT_TRUE(text);
  expect_promtool_passes(*text);
  const std::string clean = "{host=\"" + node_name + "\",path=\"" + src() + "\",result=\"clean\"}";
  EXPECT_EQ(sample("backupd_volume_last_verify_result", clean), 1) << *text;
  EXPECT_EQ(sample("backupd_volume_last_verify_differences", volume_labels()), 0) << *text;

  const std::string vol = volume_labels(), r1 = volume_labels("r1");
  EXPECT_TRUE(wait_until([&] { return sample("backupd_volume_copies_current", vol) == 3; }, 30s))
      << *text;
  EXPECT_EQ(sample("backupd_volume_up", vol), 1);
  EXPECT_EQ(sample("backupd_volume_copies_wanted", vol), 3);
  EXPECT_GE(sample("backupd_volume_ingest_bytes_total", vol), 4.0 * kMiB);
  EXPECT_EQ(sample("backupd_replica_lag_bytes", r1), 0);
  EXPECT_GT(sample("process_resident_memory_bytes", ""), 0);
  EXPECT_GT(sample("backupd_filesystem_avail_bytes", ""), 0) << *text;
  EXPECT_GE(sample("backupd_filesystem_size_bytes", ""),
            sample("backupd_filesystem_avail_bytes", ""));

  // Replicator r1 stopped while the source changes: its lag shows and it is no current copy.
  replicator(0)->signal(SIGSTOP);
  write_big_file(src("more.bin"), 8 * kMiB, 2);
  EXPECT_TRUE(wait_until(
      [&] {
        return sample("backupd_replica_lag_bytes", r1) > 0 &&
               sample("backupd_volume_copies_current", vol) == 2;
      },
      30s))
      << "r1's lag never showed in /metrics";
  replicator(0)->signal(SIGCONT);
  EXPECT_TRUE(wait_until(
      [&] {
        return sample("backupd_replica_lag_bytes", r1) == 0 &&
               sample("backupd_replica_lag_operations", r1) == 0 &&
               sample("backupd_volume_copies_current", vol) == 3;
      },
      60s))
      << "r1's lag never returned to zero in /metrics";
  ASSERT_EQ(wait_converged(), "");
}

// The node's own /metrics (backupfs --metrics-listen): its lag rises while backupd's ingest is
// stopped (SIGSTOP) and returns to zero once backupd resumes, on both sides.
TEST_F(WebTest, TheNodesLagRisesWhileBackupdIsStoppedAndReturnsToZero) {
  const std::string port_file = scratch_dir("node-metrics") + "/port";
  backupfs_args = {"--metrics-listen", "127.0.0.1:0", "--metrics-port-file", port_file};
  ASSERT_TRUE(start_all());
  ASSERT_EQ(wait_converged(), "");
  std::optional<uint16_t> port;
  ASSERT_TRUE(wait_until([&] { return (port = testutil::read_port_file(port_file)).has_value(); },
                         30s));
  auto node_sample = [&](const std::string& name) {
    httplib::Client client("127.0.0.1", *port);
    client.set_read_timeout(10);
    auto res = client.Get("/metrics");
    if (!res || res->status != 200) return -1.0;
    std::string key = name + volume_labels() + " ";
    size_t at = res->body.find("\n" + key);
    return at == std::string::npos ? -1.0 : std::stod(res->body.substr(at + 1 + key.size()));
  };
  EXPECT_EQ(node_sample("backupfs_backupd_attached"), 1);

  backupd()->signal(SIGSTOP);
  write_big_file(src("while-stopped.bin"), 2 * kMiB, 3);
  EXPECT_TRUE(wait_until(
      [&] { return node_sample("backupfs_lag_bytes") > 0 && node_sample("backupfs_lag_seconds") > 0; },
      30s))
      << "the node's lag never rose while backupd was stopped";
  backupd()->signal(SIGCONT);
  EXPECT_TRUE(wait_until(
      [&] {
        return node_sample("backupfs_lag_bytes") == 0 &&
               node_sample("backupfs_lag_operations") == 0 &&
               sample("backupd_volume_lag_operations", volume_labels()) == 0;
      },
      60s))
      << "the lag never returned to zero";
  EXPECT_GE(node_sample("backupfs_shipped_bytes_total"), 2.0 * kMiB);
  ASSERT_EQ(wait_converged(), "");
}

// The replicator's own /metrics (--metrics-listen): valid exposition, what it applied grows when a
// change is shipped, and its link to backupd shows down while backupd is away and up again,
// one session more, once it is back.
TEST_F(WebTest, TheReplicatorsMetricsCountWhatItAppliesAndItsLink) {
  replicator_metrics = true;
  ASSERT_TRUE(start_all());
  ASSERT_EQ(wait_converged(), "");
  uint16_t metrics_port = 0;
  ASSERT_TRUE(wait_until([&] { return (metrics_port = replica_metrics_port(0)) != 0; }, 30s))
      << "replicator r1 wrote no --metrics-port-file";
  auto text = get("/metrics", metrics_port);
  ASSERT_TRUE(text);
  expect_promtool_passes(*text);
  const std::string vol = volume_labels();
  const std::string link = "{server=\"127.0.0.1:" + std::to_string(port()) + "\"}";
  auto replica_sample = [&](const std::string& name, const std::string& labels = "") {
    return sample(name, labels, metrics_port);
  };
  EXPECT_EQ(replica_sample("replicator_backupd_up", link), 1) << *text;
  EXPECT_EQ(replica_sample("replicator_volumes"), 1) << *text;
  EXPECT_GT(replica_sample("replicator_volume_committed_batch", vol), 0) << *text;
  EXPECT_GT(replica_sample("replicator_volume_last_commit_timestamp_seconds", vol), 0) << *text;
  EXPECT_GT(replica_sample("replicator_filesystem_avail_bytes"), 0) << *text;
  EXPECT_GT(replica_sample("process_resident_memory_bytes"), 0) << *text;

  const double bytes = replica_sample("replicator_volume_applied_bytes_total", vol);
  const double batches = replica_sample("replicator_volume_batches_total", vol);
  write_big_file(src("shipped.bin"), 2 * kMiB, 1);
  EXPECT_TRUE(wait_until(
      [&] {
        return replica_sample("replicator_volume_applied_bytes_total", vol) >= bytes + 2.0 * kMiB &&
               replica_sample("replicator_volume_batches_total", vol) > batches;
      },
      60s))
      << "r1's applied bytes never grew by the file shipped\n"
      << get("/metrics", metrics_port).value_or("");
  ASSERT_EQ(wait_converged(), "");

  ASSERT_TRUE(stop_server());
  EXPECT_TRUE(wait_until([&] { return replica_sample("replicator_backupd_up", link) == 0; }, 30s))
      << "r1 still shows backupd up after it stopped";
  ASSERT_TRUE(start_server(port()));  // where the replicators reconnect
  EXPECT_TRUE(wait_until(
      [&] {
        return replica_sample("replicator_backupd_up", link) == 1 &&
               replica_sample("replicator_backupd_sessions_total", link) >= 2;
      },
      30s))
      << "r1 never showed its new session\n" << get("/metrics", metrics_port).value_or("");
}

TEST_F(WebTest, ApiStatusNamesTheVolumeWithItsCopiesAndRuns) {
  ASSERT_TRUE(start_all());
  put(src("f"), "x");
  ASSERT_EQ(wait_converged(), "");
  auto body = get("/api/status");
  ASSERT_TRUE(body);
  auto doc = nlohmann::json::parse(*body, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << *body;
  ASSERT_EQ(doc["volumes"].size(), 1u) << *body;
  const auto& v = doc["volumes"][0];
  EXPECT_EQ(v["host"], node_name);
  EXPECT_EQ(v["path"], src());
  EXPECT_EQ(v["copies_wanted"], 3);
  ASSERT_EQ(v["copies"].size(), 3u) << *body;
  EXPECT_EQ(v["copies"][0]["name"], "mirror");
  EXPECT_TRUE(v["recent_runs"].is_array());
  EXPECT_TRUE(v["snapshots"].is_array());
  auto page = get("/");
  ASSERT_TRUE(page);
  EXPECT_NE(page->find("/api/status"), std::string::npos) << "the page does not poll the API";
}

TEST_F(WebTest, ThePageFollowsAReplicaWithoutReloadInChromium) {
  ASSERT_TRUE(start_all());
  write_big_file(src("data.bin"), kMiB, 1);
  ASSERT_EQ(wait_converged(), "");
  std::vector<std::string> argv{"/usr/bin/python3",
                                std::string(BKP_TEST_SOURCE_DIR) + "/integration/web_page_check.py",
                                "http://127.0.0.1:" + std::to_string(http_port()) + "/",
                                "--volume", node_name + ":" + src(), "--copy", "r1",
                                "--timeout", "90"};
  if (const char* dir = std::getenv("BKP_WEB_SCREENSHOTS")) {
    argv.insert(argv.end(), {"--screenshots", dir});
  }
  testutil::Daemon browser("browser", argv, log_path("browser"));
  auto said = [&](const std::string& what) { return browser.log().find(what) != std::string::npos; };
  ASSERT_TRUE(wait_until([&] { return said("ready") || !browser.alive(); }, 60s))
      << browser.log_tail();
  ASSERT_TRUE(said("ready")) << browser.log_tail();

  replicator(0)->signal(SIGSTOP);
  write_big_file(src("more.bin"), 8 * kMiB, 2);
  EXPECT_TRUE(wait_until([&] { return said("behind") || !browser.alive(); }, 60s))
      << browser.log_tail();
  replicator(0)->signal(SIGCONT);
  auto status = browser.wait_exit(90s);
  ASSERT_TRUE(status) << "the page check did not finish\n" << browser.log_tail();
  EXPECT_EQ(*status, 0) << browser.log_tail();
  ASSERT_EQ(wait_converged(), "");
}

}  // namespace
}  // namespace bkp::it
