// kill -9 of backupd and of the replicators in the middle of a rename-heavy workload (issue 9):
// every copy must still converge to the source exactly, because each receiver resumes a stream
// from the position it kept on disk instead of replaying operations it already applied. And a
// replicator that restarts when everything is in place costs no new baseline.
//
// The workload is the pattern that broke tolerant replays: `write x; mv x y; write x` and
// `rm -rf moved; mv tree moved; mkdir tree` over and over. Kills happen at fixed iterations of
// it (conditions, not timers). backupfs is killed once too, while the writer pauses (it cannot
// survive the death of its keeper, which ends the mount), and the directory changes while it is
// down. (A worker's death under load is takeover_test.cc's.)
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>

#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"
#include "tests/testutil/files.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

class CrashTest : public ClusterTest {
 protected:
  // One round of the workload.
  void round(int i) {
    std::string n = std::to_string(i);
    put(src("w/x"), "x before " + n);
    must(rename(src("w/x").c_str(), src("w/y").c_str()), "rename x y");
    put(src("w/x"), "x after " + n + random_string(100 + i, i));
    std::filesystem::remove_all(src("w/moved"));
    must(rename(src("w/tree").c_str(), src("w/moved").c_str()), "rename tree moved");
    mkdirs(src("w/tree/sub"));
    put(src("w/tree/a"), random_string(64 * 1024 + i, i));
    put(src("w/tree/sub/b"), "b" + n);
    must(link(src("w/tree/a").c_str(), src("w/tree/a.link").c_str()), "link");
  }

  size_t count(const std::string& log, const std::string& needle) {
    size_t n = 0;
    for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
    return n;
  }
};

TEST_F(CrashTest, KillNineOfEveryDaemonMidWorkloadConverges) {
  ASSERT_TRUE(start_all());
  mkdirs(src("w/tree"));
  ASSERT_EQ(wait_converged(), "");
  uint16_t port = this->port();

  constexpr int kRounds = 400;
  constexpr int kBackupfsKilledAt = 160;  // the writer waits there while backupfs is down
  std::atomic<int> done{0};
  std::atomic<bool> stop{false}, killed{false}, resumed{false};
  std::thread writer([&] {
    for (int i = 0; i < kRounds && !stop; ++i) {
      // The last rounds run after the last kill, so the restarted daemons resume under load.
      if (i == kRounds - 100) testutil::wait_until([&] { return killed || stop; }, 120s, 1ms);
      if (i == kBackupfsKilledAt) testutil::wait_until([&] { return resumed || stop; }, 120s, 1ms);
      round(i);
      done = i + 1;
    }
  });
  auto reach = [&](int n) {
    return testutil::wait_until([&] { return done >= n || expired(); }, 120s, 1ms);
  };
  // kill -9 of the keeper (the Daemon's pid) ends the mount, so the writer
  // pauses; the rounds done on the bare directory meanwhile are changes made while it was down,
  // which the restart's reconcile must find.
  auto kill_backupfs = [&] {
    mount()->process().signal(SIGKILL);
    if (!mount()->unmount()) return false;
    for (int i = 0; i < 3; ++i) round(kRounds + i);
    bool ok = static_cast<bool>(mount_source(node_port()));
    resumed = true;
    return ok;
  };
  struct Kill {
    int at;
    int who;  // -2: backupfs, -1: backupd, 0/1: a replicator
  };
  for (Kill k : {Kill{40, -1}, Kill{120, 0}, Kill{kBackupfsKilledAt, -2}, Kill{200, 1},
                 Kill{280, -1}}) {
    bool ok = reach(k.at);
    if (ok && k.who == -2) {
      ok = kill_backupfs();
    } else if (ok && k.who < 0) {
      ok = kill_server() && start_server(port);
    } else if (ok) {
      ok = kill_replicator(k.who) && start_replicator(k.who);
    }
    EXPECT_TRUE(ok) << "kill -9 and restart at round " << k.at;
    if (!ok) break;
  }
  resumed = true;
  killed = true;
  if (HasFailure()) stop = true;
  writer.join();
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(done.load(), kRounds);
  ASSERT_EQ(wait_converged(), "");

  // At rest: a replicator's restart resumes from its position on disk, no new baseline.
  size_t before = count(log_text("backupd"), "reconcile of");
  ASSERT_TRUE(kill_replicator(0));
  write_big_file(src("w/after.bin"), kMiB, 7);
  ASSERT_TRUE(start_replicator(0));
  ASSERT_EQ(wait_converged(), "");
  EXPECT_EQ(count(log_text("backupd"), "reconcile of"), before)
      << "a replicator restart cost a baseline";

  // The same count does see a baseline: a replicator whose stream state is gone asks for one.
  // Its tree is still there, so the reconcile keeps it and ships only the file written since.
  ASSERT_TRUE(kill_replicator(1));
  std::filesystem::remove_all(replica_root(1) + "/.state");
  const std::string after = "after the state was lost";
  put(src("w/after.txt"), after);
  // The reconcile below counts what the mirror holds when r2 comes back: wait until the file's
  // bytes are there (backupfs ships data-only changes up to 20 ms later, stream::Linger), or the
  // file would go as a live change instead and the count would say 0 bytes.
  ASSERT_TRUE(testutil::wait_until(
      [&] { return testutil::read_file(mirror() + "/w/after.txt") == after; }, 30s,
      std::chrono::milliseconds(10)))
      << "the mirror never got w/after.txt";
  ASSERT_TRUE(start_replicator(1));
  ASSERT_EQ(wait_converged(), "");
  std::string log = log_text("backupd");
  EXPECT_EQ(count(log, "reconcile of"), before + 1)
      << "a replicator without state was not sent a baseline";
  // What it ships: the new 24-byte file, and after.bin only if its copy was not recorded as
  // current yet (its last Attr may have been in flight at the kill): then it is verified by
  // digests and costs no data either.
  std::string last = log.substr(log.rfind("reconcile of"));
  last = last.substr(0, last.find('\n'));
  EXPECT_TRUE(last.find(" files, 24 bytes (") != std::string::npos)
      << "the reconcile shipped more than the one changed file: " << last;
}

}  // namespace
}  // namespace bkp::it
