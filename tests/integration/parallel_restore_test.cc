// Parallel restore with failover (issue 13 item 4, tools/part_fetch.h): a snapshot held by
// backupd and two replicators serving restores is fetched in parts from all three at once;
// a source killed in the middle of a part, a replica whose copy is damaged in every part, and
// a backupd that is down do not stop the restore, and every restored tree equals the source.
// `--live` with backupd down archives a replica's tree as it is now.
#include <signal.h>

#include <future>
#include <string>
#include <vector>

#include "common/part_digests.h"
#include "common/path.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/delay_relay.h"

namespace bkp::it {
namespace {

constexpr uint64_t kBigFile = 96 * kMiB;  // about twelve 8 MiB parts of incompressible data

class ParallelRestoreTest : public ControlTest {
 protected:
  // Both replicators serve restores to one operator; a snapshot of a changed tree with a big
  // file reaches both. The snapshot as backupd lists it.
  std::optional<Json> snapshot_on_every_copy(std::string* why) {
    me_ = operator_identity("operator", &me_file_);
    for (int i = 0; i < 2; ++i) {
      port_files_[i] = scratch_dir("r" + std::to_string(i + 1) + "-listen") + "/port";
      replicator_args[i] = {"--listen", "127.0.0.1:0", "--listen-port-file", port_files_[i],
                            "--operator-id", me_};
    }
    copies = "3";
    if (auto up = start_all("2s"); !up) {
      *why = up.message();
      return std::nullopt;
    }
    auto fresh = runs_after_change(
        [&] {
          apply_mix(src(), 20);
          write_big_file(src("big.bin"), kBigFile, 13);
        },
        why);
    if (!fresh) return std::nullopt;
    auto snap = wait_newest_held_by({"r1", "r2"}, 90s, why);
    if (!snap) *why += " (the newest snapshot never reached both replicas)";
    return snap;
  }

  // `bkptool --identity ME --json restore HOST PATH --snapshot ID --to out [extra...]`.
  testutil::CommandResult restore(const Json& snap, const std::string& out,
                                  const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args{"--identity", me_file_, "--json", "restore", node_name, src(),
                                  "--snapshot", snap["id"],  "--to",     out};
    args.insert(args.end(), extra.begin(), extra.end());
    return bkptool(args, 180s);
  }

  uint16_t restore_port(int i) {
    auto port = testutil::read_port_file(port_files_[i]);
    EXPECT_TRUE(port) << "replicator " << i + 1 << " wrote no --listen-port-file";
    return port.value_or(0);
  }

  // The "sources" entry of a restore's --json answer for name (null if absent).
  static Json source(const testutil::CommandResult& r, const std::string& name) {
    Json doc = Json::parse(r.out, nullptr, false);
    if (!doc.is_object() || !doc["sources"].is_array()) return nullptr;
    for (const auto& s : doc["sources"]) {
      if (s["name"] == name) return s;
    }
    return nullptr;
  }

  std::string me_, me_file_;
  std::string port_files_[2];
};

TEST_F(ParallelRestoreTest, EveryHolderServesPartsAndTheTreeEqualsTheSource) {
  std::string why;
  auto snap = snapshot_on_every_copy(&why);
  ASSERT_TRUE(snap) << why;
  const std::string out = scratch_dir("restored");
  auto r = restore(*snap, out);
  ASSERT_EQ(r.exit_code(), 0) << r.output << log_text("r1");
  EXPECT_EQ(compare_trees(src(), out), "");

  // All three were asked, and together they supplied each part exactly once.
  uint64_t parts = 0, bytes = 0;
  for (const char* name : {"backupd", "r1", "r2"}) {
    Json s = source(r, name);
    ASSERT_TRUE(s.is_object()) << name << " was not a source: " << r.out;
    EXPECT_EQ(s["lost"], "") << r.out;
    EXPECT_EQ(s["bad_parts"], 0) << r.out;
    parts += s["parts"].get<uint64_t>();
    bytes += s["bytes"].get<uint64_t>();
  }
  EXPECT_EQ(parts, (*snap)["parts"].get<uint64_t>()) << r.out;
  EXPECT_EQ(bytes, (*snap)["bytes"].get<uint64_t>()) << r.out;

  // bkptool remembers where the replicas serve, beside its identity.
  const std::string remembered = scratch_dir("operator") + "/sources.json";
  Json file = Json::parse(testutil::read_file(remembered).value_or(""), nullptr, false);
  ASSERT_TRUE(file.is_object()) << remembered;
  std::set<std::string> names;
  for (const auto& s : file["sources"]) {
    names.insert(s["name"].get<std::string>());
    if (s["name"] == "r1") {
      EXPECT_EQ(s["address"], "127.0.0.1:" + std::to_string(restore_port(0)));
      EXPECT_EQ(s["id"], replica_id(0));
    }
  }
  EXPECT_EQ(names, (std::set<std::string>{"r1", "r2"})) << file.dump();
}

// r1 is reached through a relay that holds its answers 12 MiB in (inside its second part);
// r1 is killed there, and the relay lets the broken connection through.
TEST_F(ParallelRestoreTest, ASourceKilledMidRestoreLeavesItsPartsToTheOthers) {
  std::string why;
  auto snap = snapshot_on_every_copy(&why);
  ASSERT_TRUE(snap) << why;
  auto relay = testutil::DelayRelay::start(restore_port(0), 0ms);
  ASSERT_TRUE(relay) << relay.error().message;
  (*relay)->hold_after(12 * kMiB);
  const std::string from =
      control_socket() + "," + replica_id(0) + "@127.0.0.1:" + std::to_string((*relay)->port()) +
      "," + replica_id(1) + "@127.0.0.1:" + std::to_string(restore_port(1));
  const std::string out = scratch_dir("restored");
  auto running =
      std::async(std::launch::async, [&] { return restore(*snap, out, {"--from", from}); });
  ASSERT_TRUE((*relay)->wait_held(60s)) << "r1 never got 12 MiB into the restore";
  ASSERT_TRUE(kill_replicator(0));
  (*relay)->release();
  auto r = running.get();
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  EXPECT_EQ(compare_trees(src(), out), "");
  Json lost = source(r, "r1");  // named as the replicator calls itself
  ASSERT_TRUE(lost.is_object()) << r.out;
  // Either r1's end was noticed, or (the test held it back longer than the hedge delay) its
  // held part was asked of another source: both are the failover, neither needed r1.
  EXPECT_TRUE(lost["lost"] != "" || r.err.find("is late; asking") != std::string::npos)
      << r.output;
}

// r1's copy is damaged in every even part and r2's in every odd one, and only they are asked:
// each part has exactly one good holder, so the restore can only succeed by refusing what does
// not match and fetching it from the other. Any first pick (two neighbouring parts) meets a
// damaged one, whichever source makes it.
TEST_F(ParallelRestoreTest, DamagedPartsAreFetchedFromTheCopyThatHasThemRight) {
  std::string why;
  auto snap = snapshot_on_every_copy(&why);
  ASSERT_TRUE(snap) << why;
  const uint64_t size = (*snap)["bytes"];
  for (int i = 0; i < 2; ++i) {
    const std::string copy = replica_root(i) + "/.snapshots/" + node_name + "/" +
                             escape_path(src()) + "/" + (*snap)["name"].get<std::string>();
    for (uint64_t at = 100 + i * kPartSize; at < size; at += 2 * kPartSize) {
      ASSERT_TRUE(testutil::flip_byte(copy, at)) << copy;
    }
  }
  const std::string from = replica_id(0) + "@127.0.0.1:" + std::to_string(restore_port(0)) + "," +
                           replica_id(1) + "@127.0.0.1:" + std::to_string(restore_port(1));
  const std::string out = scratch_dir("restored");
  auto r = restore(*snap, out, {"--from", from});
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  EXPECT_EQ(compare_trees(src(), out), "");
  Json r1 = source(r, "r1"), r2 = source(r, "r2");
  ASSERT_TRUE(r1.is_object() && r2.is_object()) << r.out;
  EXPECT_EQ(r1["parts"].get<uint64_t>() + r2["parts"].get<uint64_t>(),
            (*snap)["parts"].get<uint64_t>()) << r.out;
  EXPECT_GE(r1["bad_parts"].get<uint64_t>() + r2["bad_parts"].get<uint64_t>(), 1u) << r.out;
  EXPECT_NE(r.err.find("did not match the digest"), std::string::npos) << r.output;

  // Both copies damaged in the same part: no source has it right, and the restore says so.
  const std::string copy = replica_root(1) + "/.snapshots/" + node_name + "/" +
                           escape_path(src()) + "/" + (*snap)["name"].get<std::string>();
  ASSERT_TRUE(testutil::flip_byte(copy, 200));  // part 0, already damaged on r1
  auto bad = restore(*snap, scratch_dir("bad"), {"--from", from});
  EXPECT_EQ(bad.exit_code(), 1) << bad.output;
  EXPECT_NE(bad.err.find("part 0 of snapshot"), std::string::npos) << bad.output;
  EXPECT_NE(bad.err.find("could not be had from any source"), std::string::npos) << bad.output;
}

// A first restore remembers the replicas; with backupd stopped, the next one finds them alone.
TEST_F(ParallelRestoreTest, WithBackupdDownTheRememberedReplicasServeTheRestore) {
  std::string why;
  auto snap = snapshot_on_every_copy(&why);
  ASSERT_TRUE(snap) << why;
  auto first = restore(*snap, scratch_dir("first"));
  ASSERT_EQ(first.exit_code(), 0) << first.output;
  ASSERT_TRUE(stop_server());
  // backupd served a plan and some parts of one archive: one restore in its totals.
  Json stats = Json::parse(testutil::read_file(state_dir() + "/stats.json").value_or(""), nullptr,
                           false);
  ASSERT_TRUE(stats.is_object()) << "no stats.json";
  EXPECT_EQ(stats["since_start"]["restores"], 1) << stats.dump(2);
  EXPECT_EQ(stats["since_start"]["restored_bytes"], (*snap)["bytes"]) << stats.dump(2);

  const std::string out = scratch_dir("restored");
  auto latest = bkptool({"--identity", me_file_, "--json", "restore", node_name, src(), "--to",
                         out}, 180s);
  ASSERT_EQ(latest.exit_code(), 0) << latest.output;
  EXPECT_EQ(compare_trees(src(), out), "");
  EXPECT_NE(latest.err.find("restoring from the 2 replicators remembered in"), std::string::npos)
      << latest.output;
  Json doc = Json::parse(latest.out, nullptr, false);
  EXPECT_EQ(doc["snapshot"]["id"], (*snap)["id"]) << "latest is the newest any replica holds";
  EXPECT_TRUE(source(latest, "r1").is_object()) << latest.out;
  EXPECT_TRUE(source(latest, "r2").is_object()) << latest.out;
  EXPECT_FALSE(source(latest, "backupd").is_object()) << latest.out;
}

// With backupd up, a replica's tree moves: --live from it is refused and backupd's is the live
// tree. With backupd down, a remembered replica archives its tree, newer than any snapshot.
TEST_F(ParallelRestoreTest, LiveFromAReplicaWhileBackupdIsDown) {
  std::string why;
  auto snap = snapshot_on_every_copy(&why);
  ASSERT_TRUE(snap) << why;
  auto first = restore(*snap, scratch_dir("first"));  // remembers r1 and r2
  ASSERT_EQ(first.exit_code(), 0) << first.output;
  const std::string r1 = replica_id(0) + "@127.0.0.1:" + std::to_string(restore_port(0));
  auto busy = bkptool({"--identity", me_file_, "restore", node_name, src(), "--live", "--from",
                       r1, "--to", scratch_dir("busy")});
  EXPECT_EQ(busy.exit_code(), 1) << busy.output;
  EXPECT_NE(busy.err.find("connected to backupd"), std::string::npos) << busy.output;

  put(src("after-the-snapshot"), "only the live tree has this");
  ASSERT_EQ(wait_converged(), "");
  ASSERT_TRUE(stop_server());
  const std::string out = scratch_dir("live");
  auto live = bkptool({"--identity", me_file_, "--json", "restore", node_name, src(), "--live",
                       "--to", out}, 180s);
  ASSERT_EQ(live.exit_code(), 0) << live.output << log_text("r1");
  EXPECT_EQ(compare_trees(src(), out), "");
  EXPECT_TRUE(source(live, "r1").is_object()) << "the first remembered replica: " << live.out;
  Json doc = Json::parse(live.out, nullptr, false);
  EXPECT_NE(doc["snapshot"]["id"], (*snap)["id"]) << "a live archive, not the snapshot";
  EXPECT_EQ(list_dir(replica_root(0) + "/.live"), std::vector<std::string>{})
      << "nothing of the live archive stays on the replica";
}

}  // namespace
}  // namespace bkp::it
