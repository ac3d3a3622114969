// stats.json (issue 14, common/stats_file.h): backupd writes STATE/stats.json when it stops and
// while it runs (every BKP_TEST_STATS_EVERY_MS here instead of a minute), so after a SIGTERM it
// holds the run's totals, and after a kill -9 the last written ones, which the next start adds
// to; backupfs writes its own per volume (STATE/stats-<volume>.json) when it stops, and the
// replicator its own (ROOT/.stats.json) like backupd.
#include <sys/wait.h>

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "common/path.h"
#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using json = nlohmann::json;
using testutil::wait_until;

constexpr uint64_t kMiB = 1024 * 1024;

json read_json(const std::string& path) {
  std::ifstream in(path);
  return in ? json::parse(in, nullptr, false) : json();
}

uint64_t number_at(const json& doc, const std::string& part, const std::string& key) {
  if (!doc.is_object() || !doc.contains(part) || !doc[part].contains(key)) return 0;
  return doc[part][key].get<uint64_t>();
}

class StatsTest : public ClusterTest {};

TEST_F(StatsTest, BackupdKeepsItsTotalsAcrossAStopAndAKill) {
  const std::string path = state_dir() + "/stats.json";
  ASSERT_TRUE(start_all());
  write_big_file(src("one.bin"), 2 * kMiB, 1);
  ASSERT_EQ(wait_converged(), "");
  ASSERT_TRUE(stop_server());
  json doc = read_json(path);
  ASSERT_TRUE(doc.is_object()) << "no stats.json after SIGTERM";
  EXPECT_EQ(doc["daemon"], "backupd");
  EXPECT_GE(number_at(doc, "since_start", "ingest_bytes"), 2 * kMiB) << doc.dump(2);
  EXPECT_EQ(number_at(doc, "since_install", "ingest_bytes"),
            number_at(doc, "since_start", "ingest_bytes"));
  const uint64_t first = number_at(doc, "since_install", "ingest_bytes");

  backupd_env = {"BKP_TEST_STATS_EVERY_MS=200"};
  ASSERT_TRUE(start_server(port()));  // where the replicators reconnect
  write_big_file(src("two.bin"), kMiB, 2);
  ASSERT_EQ(wait_converged(), "");
  ASSERT_TRUE(wait_until(
      [&] { return number_at(read_json(path), "since_start", "ingest_bytes") >= kMiB; }, 30s))
      << "stats.json was not refreshed while backupd ran";
  ASSERT_TRUE(kill_server());
  doc = read_json(path);
  ASSERT_TRUE(doc.is_object()) << "stats.json does not parse after kill -9";
  EXPECT_GE(number_at(doc, "since_install", "ingest_bytes"), first + kMiB) << doc.dump(2);
  EXPECT_TRUE(doc["now"]["volumes"].contains(node_name + ":" + src())) << doc.dump(2);
}

TEST_F(StatsTest, BackupfsWritesWhatItShippedWhenItStops) {
  ASSERT_TRUE(start_all());
  write_big_file(src("one.bin"), 2 * kMiB, 1);
  ASSERT_EQ(wait_converged(), "");
  ASSERT_TRUE(unmount_source());
  json doc = read_json(node_state_dir() + "/stats-" + escape_path(src()) + ".json");
  ASSERT_TRUE(doc.is_object()) << "no stats file of backupfs";
  EXPECT_EQ(doc["daemon"], "backupfs");
  EXPECT_GE(number_at(doc, "since_install", "shipped_bytes"), 2 * kMiB) << doc.dump(2);
}

TEST_F(StatsTest, TheReplicatorKeepsItsTotalsAcrossAStopAndAKill) {
  const std::string path = replica_root(0) + "/.stats.json";
  const std::string volume = node_name + ":" + src();
  auto volume_bytes = [&](const json& doc, const std::string& part) -> uint64_t {
    if (!doc.is_object() || !doc.contains(part)) return 0;
    const json& volumes = doc[part].value("volumes", json::object());
    return volumes.contains(volume) ? volumes[volume].value("applied_bytes", uint64_t{0}) : 0;
  };
  replicator_env = {"BKP_TEST_STATS_EVERY_MS=200"};
  ASSERT_TRUE(start_all());
  write_big_file(src("one.bin"), 2 * kMiB, 1);
  ASSERT_EQ(wait_converged(), "");
  const int status = replicator(0)->stop(10s);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "replicator on SIGTERM: " << testutil::describe_status(status);
  json doc = read_json(path);
  ASSERT_TRUE(doc.is_object()) << "no .stats.json after SIGTERM";
  EXPECT_EQ(doc["daemon"], "replicator");
  EXPECT_GE(number_at(doc, "since_start", "applied_bytes"), 2 * kMiB) << doc.dump(2);
  EXPECT_GE(volume_bytes(doc, "since_start"), 2 * kMiB) << doc.dump(2);
  EXPECT_GE(number_at(doc, "since_start", "sessions"), 1u) << doc.dump(2);
  EXPECT_EQ(number_at(doc, "since_install", "applied_bytes"),
            number_at(doc, "since_start", "applied_bytes"));
  EXPECT_GT(doc["now"]["volumes"][volume].value("committed_batch", uint64_t{0}), 0u)
      << doc.dump(2);
  const uint64_t first = number_at(doc, "since_install", "applied_bytes");

  ASSERT_TRUE(start_replicator(0));
  write_big_file(src("two.bin"), kMiB, 2);
  ASSERT_EQ(wait_converged(), "");
  ASSERT_TRUE(wait_until([&] { return volume_bytes(read_json(path), "since_start") >= kMiB; },
                         30s))
      << "the replicator's .stats.json was not refreshed while it ran";
  ASSERT_TRUE(kill_replicator(0));
  doc = read_json(path);
  ASSERT_TRUE(doc.is_object()) << ".stats.json does not parse after kill -9";
  EXPECT_GE(number_at(doc, "since_install", "applied_bytes"), first + kMiB) << doc.dump(2);
  EXPECT_GE(volume_bytes(doc, "since_install"), first + kMiB) << doc.dump(2);
}

}  // namespace
}  // namespace bkp::it
