// Restores without backupd (issue 13 item 4, replicator/restore_service.h): a replicator started
// with --listen serves its snapshot copies to bkptool itself, in backupd's control shapes, so
// `bkptool --server REPLICA --server-id REPLICA_ID restore ...` works with backupd stopped; only
// the --operator-id identities get in, and the part digests kept beside each copy still guard
// every restore.
#include <unistd.h>

#include <string>
#include <vector>

#include "common/part_digests.h"
#include "common/path.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"

namespace bkp::it {
namespace {

class ReplicaRestoreTest : public ControlTest {
 protected:
  // bkptool over TCP to r1's restore service, as identity_file.
  testutil::CommandResult from_r1(const std::vector<std::string>& args,
                                  const std::string& identity_file) {
    auto port = testutil::read_port_file(r1_port_file_);
    EXPECT_TRUE(port) << "r1 wrote no --listen-port-file";
    std::vector<std::string> argv{binaries().bkptool,   "--server",
                                  "127.0.0.1:" + std::to_string(port.value_or(0)),
                                  "--server-id",        replica_id(0),
                                  "--identity",         identity_file};
    argv.insert(argv.end(), args.begin(), args.end());
    return testutil::run_command(argv, std::chrono::seconds(120));
  }

  std::string copy_on_r1(const std::string& name) const {
    return replica_root(0) + "/.snapshots/" + node_name + "/" + escape_path(src()) + "/" + name;
  }

  // r1 listens for operator as it starts; the snapshot of a changed tree reaches it; backupd
  // stops. The snapshot as backupd listed it.
  std::optional<Json> snapshot_on_r1_then_stop_backupd(const std::string& operator_id,
                                                       std::string* why) {
    r1_port_file_ = scratch_dir("r1-listen") + "/port";
    replicator_args[0] = {"--listen", "127.0.0.1:0", "--listen-port-file", r1_port_file_,
                          "--operator-id", operator_id};
    if (auto up = start_all("2s"); !up) {
      *why = up.message();
      return std::nullopt;
    }
    auto fresh = runs_after_change(
        [&] {
          apply_mix(src(), 20);
          write_big_file(src("big.bin"), 20 * kMiB, 11);  // three parts of 8 MiB
        },
        why);
    if (!fresh) return std::nullopt;
    auto snap = wait_newest_held_by({"r1"}, 90s, why);
    if (!snap) {
      *why += " (the newest snapshot never reached r1)";
      return std::nullopt;
    }
    if (auto stopped = stop_server(); !stopped) {
      *why = stopped.message();
      return std::nullopt;
    }
    return snap;
  }

  std::string r1_port_file_;
};

TEST_F(ReplicaRestoreTest, BkptoolRestoresFromAReplicaWhileBackupdIsDown) {
  std::string me_file;
  const std::string me = operator_identity("operator", &me_file);
  std::string why;
  auto snap = snapshot_on_r1_then_stop_backupd(me, &why);
  ASSERT_TRUE(snap) << why;

  // The listing, in backupd's shape, names r1 as the holder.
  auto listed = from_r1({"--json", "snapshots", node_name, src()}, me_file);
  ASSERT_EQ(listed.exit_code(), 0) << listed.output;
  Json doc = Json::parse(listed.out);
  ASSERT_FALSE(doc["snapshots"].empty()) << listed.out;
  EXPECT_EQ(doc["snapshots"][0]["id"], (*snap)["id"]) << listed.out;
  EXPECT_EQ(doc["snapshots"][0]["bytes"], (*snap)["bytes"]) << listed.out;
  EXPECT_EQ(doc["snapshots"][0]["parts"], (*snap)["parts"]) << listed.out;
  EXPECT_EQ(doc["snapshots"][0]["holders"], Json::array({"r1"})) << listed.out;

  // latest, and by id: both equal the source (unchanged since).
  const std::string out = scratch_dir("restored");
  auto restored = from_r1({"restore", node_name, src(), "--to", out}, me_file);
  ASSERT_EQ(restored.exit_code(), 0) << restored.output << log_text("r1");
  EXPECT_EQ(compare_trees(src(), out), "");
  const std::string by_id = scratch_dir("by-id");
  auto again = from_r1({"restore", node_name, src(), "--snapshot", (*snap)["id"], "--to", by_id},
                       me_file);
  ASSERT_EQ(again.exit_code(), 0) << again.output;
  EXPECT_EQ(compare_trees(src(), by_id), "");

  // An id r1 does not hold is backupd's no_snapshot: exit 7.
  auto none = from_r1({"restore", node_name, src(), "--snapshot", "20000101T000000.000Z", "--to",
                       scratch_dir("none")}, me_file);
  EXPECT_EQ(none.exit_code(), 7) << none.output;
  EXPECT_NE(none.err.find("replica r1 holds no snapshot '20000101T000000.000Z'"),
            std::string::npos) << none.output;
  // So is a volume r1 holds nothing of (exit 4), and a command only backupd serves is refused.
  auto unknown = from_r1({"snapshots", node_name, "/no/such/volume"}, me_file);
  EXPECT_EQ(unknown.exit_code(), 4) << unknown.output;
  auto list = from_r1({"list"}, me_file);
  EXPECT_NE(list.exit_code(), 0) << list.output;
  EXPECT_NE(list.err.find("a replicator serves snapshots and restore"), std::string::npos)
      << list.output;
}

TEST_F(ReplicaRestoreTest, AnIdentityNotGivenWithOperatorIdIsRefused) {
  std::string me_file, stranger_file;
  const std::string me = operator_identity("operator", &me_file);
  const std::string stranger = operator_identity("stranger", &stranger_file);
  std::string why;
  ASSERT_TRUE(snapshot_on_r1_then_stop_backupd(me, &why)) << why;
  const std::string out = scratch_dir("stranger-out");
  auto refused = from_r1({"restore", node_name, src(), "--to", out}, stranger_file);
  EXPECT_NE(refused.exit_code(), 0) << refused.output;
  EXPECT_NE(refused.err.find("operator identity " + stranger +
                             " is not authorised on replica r1; start the replicator with "
                             "--operator-id " + stranger),
            std::string::npos)
      << refused.output;
  EXPECT_TRUE(list_dir(out).empty()) << "nothing is restored for a stranger";
}

TEST_F(ReplicaRestoreTest, ADamagedCopyFailsTheRestoreNamingThePart) {
  std::string me_file;
  const std::string me = operator_identity("operator", &me_file);
  std::string why;
  auto snap = snapshot_on_r1_then_stop_backupd(me, &why);
  ASSERT_TRUE(snap) << why;
  const std::string archive = copy_on_r1((*snap)["name"]);
  ASSERT_TRUE(testutil::flip_byte(archive, kPartSize + 1000)) << archive;
  auto bad = from_r1({"restore", node_name, src(), "--snapshot", (*snap)["id"], "--to",
                      scratch_dir("damaged")}, me_file);
  EXPECT_EQ(bad.exit_code(), 1) << bad.output;
  EXPECT_NE(bad.err.find("part 1 of snapshot"), std::string::npos) << bad.output;
  EXPECT_NE(bad.err.find("damaged"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace bkp::it
