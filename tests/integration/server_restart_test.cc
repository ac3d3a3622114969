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

}  // namespace
}  // namespace bkp::it
