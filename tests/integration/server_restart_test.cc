// Server down and back (DESIGN.md invariants 1 and 2): while backupd is stopped the application
// keeps writing without blocking; backupfs keeps recording; when backupd restarts on the same
// port with the same state directory, it finds the registration in its catalog and attaches to
// the node by itself, both replicators reconnect, and every copy converges, with nothing
// written during the outage missing.
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <functional>

#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"

namespace bkp::it {
namespace {

using Clock = std::chrono::steady_clock;

class ServerRestartTest : public ClusterTest {};

TEST_F(ServerRestartTest, WritesDuringAnOutageArriveAfterRestart) {
  ASSERT_TRUE(start_all());
  mkdirs(src("app"));
  for (int i = 0; i < 50; ++i)
    put(src("app/early" + std::to_string(i)), "early " + std::to_string(i));
  write_big_file(src("app/db.bin"), 32 * kMiB, 10);
  ASSERT_EQ(wait_converged(), "");

  uint16_t port = this->port();
  ASSERT_TRUE(stop_server());

  // Keep writing through the mount. Each call must return promptly: recording never waits
  // for the network.
  Clock::duration slowest{};
  auto timed = [&](const std::function<void()>& op) {
    auto t0 = Clock::now();
    op();
    slowest = std::max(slowest, Clock::now() - t0);
  };
  bool finished = finishes_within(
      [&] {
        for (int i = 0; i < 200; ++i) {
          timed([&] { put(src("app/during" + std::to_string(i)), random_string(1000 + i, i)); });
        }
        timed([&] { write_at(src("app/db.bin"), 5 * kMiB, random_string(3 * kMiB, 11)); });
        timed([&] { write_big_file(src("app/new.bin"), 16 * kMiB, 12); });
        timed([&] {
          must(rename(src("app/early1").c_str(), src("app/renamed1").c_str()), "rename");
        });
        timed([&] { must(unlink(src("app/early2").c_str()), "unlink"); });
        timed([&] { mkdirs(src("app/newdir/inner")); });
        timed([&] { must(chmod(src("app/early3").c_str(), 0600), "chmod"); });
        timed([&] { truncate_to(src("app/db.bin"), 20 * kMiB); });
      },
      60s, [&] { mount()->process().signal(SIGKILL); });
  ASSERT_TRUE(finished) << "writes through the mount blocked while backupd was down";
  EXPECT_LT(slowest, 5s) << "one operation took "
                         << std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count()
                         << " ms while backupd was down";
  EXPECT_EQ(slurp(src("app/during7")), random_string(1007, 7)) << "the application's own data";
  EXPECT_TRUE(mount()->process().alive()) << "backupfs died while backupd was down";

  ASSERT_TRUE(start_server(port));
  ASSERT_EQ(wait_converged(), "");
}

// An outage longer than the change logs' bound (a node and both replica streams limited to 64
// queued operations here): the node drops its operations, keeps its data ranges, and reconciles
// by manifest when backupd is back; backupd's replica logs, which overflow while the replicators
// are away, do the same with each replica. Every copy still ends equal to the source.
TEST_F(ServerRestartTest, AnOutageLongerThanTheLogBoundEndsInAReconcile) {
  std::string config = scratch_dir("config") + "/backupd.toml";
  put(config, "max_queued_ops = 64\n");
  backupd_args = {"--config", config};
  backupfs_args = {"--max-queued-ops", "64"};
  ASSERT_TRUE(start_all());
  mkdirs(src("app/keep"));
  for (int i = 0; i < 20; ++i) put(src("app/keep/f" + std::to_string(i)), "kept " + std::to_string(i));
  write_big_file(src("app/db.bin"), 4 * kMiB, 3);
  ASSERT_EQ(wait_converged(), "");

  // The replicas away first: backupd's logs for them overflow while the node streams on. (Their
  // first connection was a reconcile too: only what backupd logs from here on counts.)
  size_t from = log_text("backupd").size();
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(kill_replicator(i));
  for (int i = 0; i < 100; ++i) put(src("app/r" + std::to_string(i)), std::to_string(i));
  mkdirs(src("app/dir"));
  ASSERT_EQ(rename(src("app/r5").c_str(), src("app/dir/r5").c_str()), 0);
  ASSERT_TRUE(start_replicators());
  ASSERT_EQ(wait_converged(), "");
  EXPECT_NE(log_text("backupd").find("reconcile of", from), std::string::npos)
      << "the replicas were not reconciled after their logs overflowed";

  // Then backupd away: the node's own log overflows.
  uint16_t port = this->port();
  ASSERT_TRUE(stop_server());
  for (int i = 0; i < 100; ++i) put(src("app/n" + std::to_string(i)), random_string(100 + i, i));
  ASSERT_EQ(rename(src("app/keep").c_str(), src("app/kept").c_str()), 0);
  ASSERT_EQ(unlink(src("app/r7").c_str()), 0);
  write_at(src("app/db.bin"), kMiB, "written while the log was full");
  ASSERT_TRUE(start_server(port));
  ASSERT_EQ(wait_converged(), "");
  EXPECT_NE(log_text("backupfs").find("the change log overflowed"), std::string::npos)
      << log_text("backupfs");
}

}  // namespace
}  // namespace bkp::it
