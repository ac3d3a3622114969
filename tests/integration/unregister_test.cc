// What unregister leaves behind (docs/PROTOCOL.md "Drop", server/drops.h):
//
// - --purge deletes the volume's copy on every replica, one that was down during the unregister
//   included: backupd keeps the drop (across its own restart) and sends it when it returns;
// - register/unregister cycles leave no descriptor open in backupd or the replicators;
// - a kept volume's history and restore still work, after a backupd restart too, while nothing
//   holds the volume open;
// - a volume registered again after unregister (kept or purged) converges again.
#include <dirent.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "common/path.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

// The targets of a process's descriptors (/proc/PID/fd/*); empty once it is gone.
std::vector<std::string> open_files(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  std::vector<std::string> out;
  for (const auto& name : list_dir(dir)) {
    char target[PATH_MAX];
    ssize_t n = ::readlink((dir + "/" + name).c_str(), target, sizeof target);
    if (n > 0) out.emplace_back(target, static_cast<size_t>(n));
  }
  return out;
}

bool exists(const std::string& path) {
  struct stat st{};
  return ::lstat(path.c_str(), &st) == 0;
}

class UnregisterTest : public ControlTest {
 protected:
  // `bkptool unregister kHost src [--purge]`, expected to exit 0: its messages.
  std::string unregister(bool purge) {
    std::vector<std::string> args{"unregister", kHost, src()};
    if (purge) args.push_back("--purge");
    auto r = bkptool(args);
    EXPECT_EQ(r.exit_code(), 0) << r.output;
    return r.err;
  }

  // What replicator i still has of the volume: its tree, id links and stream state, and the
  // host directories they live in.
  std::vector<std::string> leftovers(int i) const {
    const std::string root = replica_root(i), escaped = escape_path(src());
    std::vector<std::string> out;
    for (const std::string& base : {root, root + "/.ids", root + "/.state"}) {
      for (const std::string& p : {base + "/" + node_name + "/" + escaped, base + "/" + node_name}) {
        if (exists(p)) out.push_back(p);
      }
    }
    return out;
  }

  // The descriptor counts of backupd and both replicators, in that order.
  std::vector<size_t> descriptor_counts() {
    return {open_files(backupd()->pid()).size(), open_files(replicator(0)->pid()).size(),
            open_files(replicator(1)->pid()).size()};
  }

  // "" once no descriptor of backupd is under the volume's directory and none of a replicator
  // under its copy (tree, id links, stream state); else, at timeout, the first one still open.
  std::string wait_nothing_open(std::chrono::seconds timeout) {
    std::string held;
    testutil::wait_until(
        [&] {
          held.clear();
          std::vector<std::pair<pid_t, std::string>> watched{{backupd()->pid(), volume_dir()}};
          for (int i = 0; i < 2; ++i) {
            for (const std::string& base : {replica_root(i), replica_root(i) + "/.ids",
                                            replica_root(i) + "/.state"}) {
              watched.emplace_back(replicator(i)->pid(),
                                   base + "/" + node_name + "/" + escape_path(src()));
            }
          }
          for (const auto& [pid, dir] : watched) {
            for (const auto& f : open_files(pid)) {
              if (f == dir || f.rfind(dir + "/", 0) == 0) held = std::to_string(pid) + " holds " + f;
            }
          }
          return held.empty() || expired();
        },
        timeout);
    return held;
  }

  // Waits until backupd has seen both replicators connect.
  bool wait_replicas_connected() {
    return testutil::wait_until(
        [&] {
          std::string log = log_text("backupd");
          return expired() || (log.find("replica r1 connected") != std::string::npos &&
                               log.find("replica r2 connected") != std::string::npos);
        },
        30s);
  }

  // Waits until backupd's status shows the replica named `name` disconnected from the volume.
  bool wait_replica_gone(const std::string& name) {
    return testutil::wait_until(
        [&] {
          auto st = bkptool_json({"status", kHost, src()});
          if (!st || expired()) return expired();
          for (const auto& v : (*st)["volumes"]) {
            for (const auto& r : v["replicas"]) {
              if (r.value("name", "") == name) return !r.value("connected", true);
            }
          }
          return false;
        },
        30s);
  }

  // `bkptool restore kHost src --to DIR` of the latest snapshot into a fresh directory, compared
  // with src: "" when equal.
  std::string restore_equals_src(const std::string& name) {
    std::string out = scratch_dir(name);
    auto r = bkptool({"restore", kHost, src(), "--to", out});
    if (r.exit_code() != 0) return "restore failed: " + r.output;
    return compare_trees(src(), out);
  }
};

TEST_F(UnregisterTest, PurgeDeletesTheCopyOnEveryReplicaEvenOneThatWasAway) {
  ASSERT_TRUE(start_all());
  mkdirs(src("d/e"));
  put(src("d/e/file"), random_string(300000, 1));
  put(src("top"), "top\n");
  ASSERT_EQ(wait_converged(), "");
  ASSERT_TRUE(kill_replicator(1));
  ASSERT_TRUE(wait_replica_gone("r2"));

  std::string said = unregister(/*purge=*/true);
  EXPECT_NE(said.find("unregistered " + std::string(kHost) + ":" + src() +
                      "; deleted its mirror, snapshots and history on backupd (" + volume_dir() +
                      ")"),
            std::string::npos)
      << said;
  EXPECT_NE(said.find("replica r1: copy deleted"), std::string::npos) << said;
  EXPECT_NE(said.find("replica r2: offline; it deletes its copy when it reconnects"),
            std::string::npos)
      << said;
  EXPECT_FALSE(exists(volume_dir()));
  EXPECT_EQ(leftovers(0), std::vector<std::string>{});
  EXPECT_NE(leftovers(1), std::vector<std::string>{}) << "r2 was away: its copy is still there";

  // The drop waits in backupd's catalog, across a restart of backupd, for r2's return.
  ASSERT_TRUE(stop_server());
  ASSERT_TRUE(start_server(port()));
  ASSERT_TRUE(start_replicator(1));
  testutil::wait_until([&] { return leftovers(1).empty() || expired(); }, 30s);
  EXPECT_EQ(leftovers(1), std::vector<std::string>{});
  EXPECT_NE(log_text("backupd").find("replica r2 deleted its copy of " + std::string(kHost) +
                                     ":" + src()),
            std::string::npos);
}

TEST_F(UnregisterTest, RegisterUnregisterCyclesLeaveNoDescriptorOpen) {
  ASSERT_TRUE(start_server());
  ASSERT_TRUE(start_replicators());
  ASSERT_TRUE(mount_source());
  ASSERT_TRUE(wait_replicas_connected()) << log_text("backupd");
  mkdirs(src("a/b"));
  put(src("a/b/file"), random_string(200000, 2));
  const std::vector<size_t> before = descriptor_counts();

  for (int cycle = 0; cycle < 4; ++cycle) {
    SCOPED_TRACE("cycle " + std::to_string(cycle));
    put(src("a/cycle"), "cycle " + std::to_string(cycle) + "\n");
    ASSERT_TRUE(register_volume());
    ASSERT_EQ(wait_converged(), "");
    EXPECT_NE(descriptor_counts(), before) << "a registered volume holds descriptors";
    unregister(/*purge=*/cycle % 2 == 1);
    std::vector<size_t> now;
    testutil::wait_until(
        [&] {
          now = descriptor_counts();
          return now == before || expired();
        },
        30s);
    EXPECT_EQ(now, before) << "descriptors of backupd, r1, r2 before the cycle and after it";
  }
  EXPECT_EQ(wait_nothing_open(1s), "");
}

TEST_F(UnregisterTest, KeptVolumeKeepsHistoryAndRestoreWithoutBeingOpen) {
  ASSERT_TRUE(start_all("2s"));
  std::string why;
  auto fresh = runs_after_change([&] { put(src("kept.txt"), random_string(100000, 3)); }, &why);
  ASSERT_TRUE(fresh) << why;
  ASSERT_GE(count_status(*fresh, "written"), 1u) << Json(*fresh).dump(2);
  auto before = runs(&why);
  ASSERT_TRUE(before) << why;

  std::string said = unregister(/*purge=*/false);
  EXPECT_NE(said.find("snapshots and history kept"), std::string::npos) << said;
  EXPECT_NE(said.find("replica r1: copy closed (kept on disk)"), std::string::npos) << said;
  EXPECT_NE(said.find("replica r2: copy closed (kept on disk)"), std::string::npos) << said;
  EXPECT_EQ(wait_nothing_open(30s), "");
  EXPECT_EQ(compare_trees(src(), replica(0)), "") << "a kept copy stays on disk";

  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round == 0 ? "after unregister" : "after a restart of backupd");
    auto after = runs(&why);
    ASSERT_TRUE(after) << why;
    EXPECT_GE(after->size(), before->size());
    EXPECT_EQ(restore_equals_src("restored" + std::to_string(round)), "");
    EXPECT_EQ(wait_nothing_open(1s), "") << "history and restore left the volume open";
    if (round == 0) {
      ASSERT_TRUE(stop_server());
      ASSERT_TRUE(start_server(port()));
      ASSERT_TRUE(wait_replicas_connected());
    }
  }
}

TEST_F(UnregisterTest, RegisteredAgainAfterUnregisterConvergesAgain) {
  ASSERT_TRUE(start_all());
  mkdirs(src("x"));
  put(src("x/one"), random_string(150000, 4));
  put(src("x/two"), "two\n");
  ASSERT_EQ(wait_converged(), "");

  unregister(/*purge=*/false);
  // Changes while nothing backs the volume up reach everyone once it is registered again.
  put(src("x/three"), random_string(70000, 5));
  must(::unlink(src("x/two").c_str()), "unlink");
  ASSERT_TRUE(register_volume());
  ASSERT_EQ(wait_converged(), "");

  // After a purge everything starts from nothing, on backupd and on the replicas.
  unregister(/*purge=*/true);
  EXPECT_EQ(leftovers(0), std::vector<std::string>{});
  EXPECT_EQ(leftovers(1), std::vector<std::string>{});
  put(src("x/four"), "four\n");
  ASSERT_TRUE(register_volume());
  ASSERT_EQ(wait_converged(), "");
}

}  // namespace
}  // namespace bkp::it
