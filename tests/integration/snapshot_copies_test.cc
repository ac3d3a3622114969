// Snapshots on every copy (issue 13 item 3, server/snapshot_copies.h): each snapshot backupd
// writes reaches every replica the volume is placed on, byte for byte, with a .parts file of
// the same SHA-256 per 8 MiB that backupd's catalog lists; `snapshots` names every holder; and
// a replica that lost its copies gets them again at its next connection; a transfer cut in the
// middle goes on where it stopped at the next connection.
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/part_digests.h"
#include "common/path.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/delay_relay.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using testutil::wait_until;

class SnapshotCopiesTest : public ControlTest {
 protected:
  std::string copy_of(int replica, const std::string& name) const {
    return replica_root(replica) + "/.snapshots/" + node_name + "/" + escape_path(src()) + "/" +
           name;
  }
  // The newest snapshot backupd lists, with its holders; nullopt if none yet.
  std::optional<Json> newest(std::string* why) {
    auto snaps = snapshots(why);
    if (!snaps || snaps->empty()) return std::nullopt;
    return (*snaps)[0];
  }
};

TEST_F(SnapshotCopiesTest, EverySnapshotReachesEveryPlacedReplicaWithItsDigests) {
  ASSERT_TRUE(start_all("2s"));
  std::string why;
  auto fresh = runs_after_change(
      [&] {
        apply_mix(src(), 20);
        write_big_file(src("big.bin"), 20 * kMiB, 7);  // incompressible: three parts of 8 MiB
      },
      &why);
  ASSERT_TRUE(fresh) << why;
  auto snap = wait_newest_held_by({"r1", "r2"}, 90s, &why);
  ASSERT_TRUE(snap) << why;
  const std::string name = (*snap)["name"];
  const std::string id = (*snap)["id"];
  auto original = testutil::read_file(snapshots_dir() + "/" + name);
  ASSERT_TRUE(original);
  EXPECT_EQ((*snap)["parts"], part_count(original->size())) << snap->dump();
  EXPECT_EQ((*snap)["part_size"], kPartSize);
  PartHasher hasher;
  hasher.feed(*original);
  std::string parts = std::to_string(kPartSize) + "\n";
  for (const auto& d : hasher.finish()) parts += to_hex(d) + "\n";
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(testutil::read_file(copy_of(i, name)), original) << "r" << i + 1 << "'s copy";
    EXPECT_EQ(testutil::read_file(copy_of(i, id + ".parts")), parts) << "r" << i + 1;
  }

  // r2 loses its copies while it is down: at its next connection it gets them again.
  ASSERT_TRUE(kill_replicator(1));
  ASSERT_EQ(::unlink(copy_of(1, name).c_str()), 0);
  ASSERT_TRUE(start_replicator(1));
  EXPECT_TRUE(wait_until([&] { return testutil::read_file(copy_of(1, name)) == original; }, 90s))
      << "r2 did not get " << name << " again\n" << log_text("backupd");
}

// The digests serve restores too: bkptool checks each part before extracting it, so a byte
// flipped in backupd's archive fails the restore, naming the part, instead of restoring
// damaged files.
TEST_F(SnapshotCopiesTest, ARestoreChecksEveryPartAndRefusesADamagedOne) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  std::string why;
  auto fresh = runs_after_change([&] { write_big_file(src("big.bin"), 20 * kMiB, 8); }, &why);
  ASSERT_TRUE(fresh) << why;
  auto snap = newest(&why);
  ASSERT_TRUE(snap) << why;
  const std::string name = (*snap)["name"];
  const std::string clean = scratch_dir("clean");
  auto ok = bkptool({"restore", node_name, src(), "--snapshot", (*snap)["id"], "--to", clean});
  ASSERT_EQ(ok.exit_code(), 0) << ok.output;

  // Damage part 1 (the schedule keeps 10 snapshots: this one stays while the test runs).
  const std::string archive = snapshots_dir() + "/" + name;
  ASSERT_TRUE(testutil::flip_byte(archive, kPartSize + 1000)) << archive;
  auto bad = bkptool({"restore", node_name, src(), "--snapshot", (*snap)["id"], "--to",
                      scratch_dir("damaged")});
  EXPECT_EQ(bad.exit_code(), 1) << bad.output;
  EXPECT_NE(bad.err.find("part 1 of snapshot"), std::string::npos) << bad.output;
  EXPECT_NE(bad.err.find("damaged"), std::string::npos) << bad.output;
}

// A run of a volume with fewer current copies than it wants says so in the history.
TEST_F(SnapshotCopiesTest, ARunOfAnUnderReplicatedVolumeSaysSo) {
  copies = "2";  // the mirror and one replica, and no replicator runs
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  std::string why;
  auto fresh = runs_after_change([&] { put(src("f"), "f"); }, &why);
  ASSERT_TRUE(fresh) << why;
  // A written run carries it as its warnings, another as its error.
  const Json& run = fresh->back();
  const Json& note = run["status"] == "written" ? run["warnings"] : run["error"];
  ASSERT_TRUE(note.is_string()) << run.dump();
  EXPECT_NE(note.get<std::string>().find("under-replicated: 1 of 2 copies current"),
            std::string::npos)
      << run.dump();
}

// r1 reaches backupd through a relay; the snapshot transfer to it is held 4 MiB in, the
// session is cut (the identity removed, then added again), and the next connection goes on from
// what r1 kept instead of sending the archive from its first byte. The relay holds backupd back
// too (delay_relay.h): when the identity is removed, backupd has sent at most the 4 MiB, the
// relay's receive buffer and its own socket's send buffer (tcp_wmem's maximum, 4 MiB by
// default), far from the 40 MiB archive, so what release() lets through cannot complete it.
TEST_F(SnapshotCopiesTest, ACutTransferGoesOnWhereItStopped) {
  copies = "2";
  ASSERT_TRUE(start_all("1h", /*with_replicators=*/false));
  auto relay = testutil::DelayRelay::start(port(), 0ms);
  ASSERT_TRUE(relay) << relay.error().message;
  replicator_server[0] = "127.0.0.1:" + std::to_string((*relay)->port());
  ASSERT_TRUE(start_replicator(0));
  write_big_file(src("big.bin"), 40 * kMiB, 9);  // incompressible: five parts of 8 MiB
  ASSERT_EQ(wait_converged(), "");

  (*relay)->hold_after(4 * kMiB);  // the node is idle: the next megabytes are the snapshot's
  std::string why;
  auto run = bkptool_json({"run", node_name, src()}, &why);
  ASSERT_TRUE(run) << why;
  ASSERT_EQ((*run)["run"]["status"], "written") << run->dump();
  const std::string name = (*run)["run"]["snapshot"].get<std::string>() + ".tgz";
  const std::string tmp = copy_of(0, ".tmp-" + name);
  ASSERT_TRUE((*relay)->wait_held(60s)) << "the transfer never reached 4 MiB";
  ASSERT_TRUE(wait_until([&] {
    struct stat st {};
    return ::stat(tmp.c_str(), &st) == 0 && st.st_size > 0;
  }, 30s)) << "r1 has no part of the archive yet: " << tmp;

  ASSERT_EQ(bkptool({"replica", "remove", replica_id(0)}).exit_code(), 0);
  (*relay)->release();
  ASSERT_TRUE(wait_until([&] {
    return log_text("r1").find("not authorised") != std::string::npos;
  }, 30s)) << "r1's session was not cut\n" << log_text("r1");
  ASSERT_EQ(bkptool({"replica", "add", replica_id(0), "--name", "r1"}).exit_code(), 0);

  auto snap = wait_newest_held_by({"r1"}, 90s, &why);
  ASSERT_TRUE(snap) << why << "\n" << log_text("backupd");
  EXPECT_EQ(testutil::read_file(copy_of(0, name)), testutil::read_file(snapshots_dir() + "/" + name));
  const std::string resumed = "resuming snapshot " + (*snap)["id"].get<std::string>() +
                              " for replica r1 at byte ";
  EXPECT_NE(log_text("backupd").find(resumed), std::string::npos) << log_text("backupd");
}

}  // namespace
}  // namespace bkp::it
