// Registrations and the schedule across failures (DESIGN.md §4, invariant 6):
//
// - backupd restarted (SIGTERM, same state directory and port) still has the registration and
//   the history, attaches to the node by itself and keeps the schedule.
// - A node that is down at a scheduled run gets a "failed" run naming the node; once backupfs is
//   back on the same port and backupd has reattached, the next run succeeds.
#include <unistd.h>

#include <algorithm>

#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

class ScheduleTest : public ControlTest {};

TEST_F(ScheduleTest, RegistrationHistoryAndScheduleSurviveARestart) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  std::string why;
  auto runs = runs_after_change([&] { put(src("file.txt"), "before the restart\n"); }, &why);
  ASSERT_TRUE(runs) << why;
  ASSERT_GE(count_status(*runs, "written"), 1u) << Json(*runs).dump(2);

  auto vol_before = volume(&why);
  ASSERT_TRUE(vol_before) << why;
  auto runs_before = this->runs(&why);
  ASSERT_TRUE(runs_before) << why;

  uint16_t port = this->port();
  ASSERT_TRUE(stop_server());
  ASSERT_TRUE(start_server(port));

  // The registration, as it was.
  auto vol_after = volume(&why);
  ASSERT_TRUE(vol_after) << why;
  for (const char* key : {"host", "port", "path", "every_seconds", "registered_at"}) {
    EXPECT_EQ(vol_after->at(key), vol_before->at(key)) << key;
  }
  // Every run listed before is still listed, unchanged.
  auto runs_after = this->runs(&why);
  ASSERT_TRUE(runs_after) << why;
  for (const auto& old_run : *runs_before) {
    bool kept = false;
    for (const auto& run : *runs_after) kept = kept || run == old_run;
    EXPECT_TRUE(kept) << "lost or changed by the restart: " << old_run.dump();
  }

  // backupd attaches by itself; the data path and the schedule carry on.
  ASSERT_TRUE(wait_connected(60s, &why)) << why;
  runs = runs_after_change([&] { put(src("file.txt"), "after the restart\n"); }, &why);
  ASSERT_TRUE(runs) << "no scheduled run after the restart: " << why;
  EXPECT_GE(count_status(*runs, "written"), 1u) << Json(*runs).dump(2);
}

TEST_F(ScheduleTest, RunFailsWhileTheNodeIsDownAndSucceedsOnceItIsBack) {
  uint16_t node = free_port();
  ASSERT_NE(node, 0);
  ASSERT_TRUE(start_server());
  ASSERT_TRUE(mount_source(node));
  ASSERT_TRUE(register_volume("2s"));
  std::string why;
  auto runs = runs_after_change([&] { put(src("file.txt"), "the node is up\n"); }, &why);
  ASSERT_TRUE(runs) << why;
  ASSERT_GE(count_status(*runs, "written"), 1u) << Json(*runs).dump(2);

  // Node down: a scheduled run fails, and its reason names the node.
  auto known = run_ids();
  ASSERT_TRUE(unmount_source());
  runs = wait_runs_through(known, time(nullptr), 30s, &why);
  ASSERT_TRUE(runs) << why;
  const Json& failed = runs->back();
  EXPECT_EQ(failed.value("status", ""), "failed") << failed.dump();
  std::string error = failed.at("error").is_string() ? failed.at("error").get<std::string>() : "";
  EXPECT_NE(error.find("node"), std::string::npos) << "the reason should name the node: " << error;
  EXPECT_TRUE(failed.at("snapshot").is_null()) << failed.dump();

  // Node back on the same port: backupd reattaches, and the first run after that succeeds.
  put(src("file.txt"), "changed while backupfs was down\n");  // the plain directory now
  ASSERT_TRUE(mount_source(node));
  ASSERT_TRUE(wait_connected(60s, &why)) << why;
  known = run_ids();
  runs = wait_runs_through(known, time(nullptr), 30s, &why);
  ASSERT_TRUE(runs) << why;
  for (const auto& run : *runs) {
    EXPECT_TRUE(run.value("status", "") == "written" || run.value("status", "") == "unchanged")
        << run.dump();
  }
  ASSERT_EQ(wait_converged(), "");
}

}  // namespace
}  // namespace bkp::it
