// `bkptool verify` (server/verify.h) on a real cluster: it passes on a clean volume, finds a
// byte flipped in the mirror (with --read-data; a metadata-only verify finds the same flip
// only when the file's size or times moved with it), a file removed from a replica's tree
// (--replicas) and a truncated snapshot (--snapshots), exits 10 for a difference and 1 for a
// copy it could not check, and every verify is listed by `history`, scheduled ones too.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "common/path.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

struct Verified {
  int exit = -1;
  Json doc;  // the --json document (null if none)
  std::string output;
};

class VerifyTest : public ControlTest {
 protected:
  Verified verify(const std::vector<std::string>& flags) {
    std::vector<std::string> args{"--json", "verify", node_name, src()};
    args.insert(args.end(), flags.begin(), flags.end());
    auto r = bkptool(args, 120s);
    Verified v{r.exit_code(), Json::parse(r.out, nullptr, false), r.output};
    return v;
  }

  // The differences the verify found in copy `name` ("mirror", "r1", a snapshot id).
  static std::vector<Json> differences_of(const Json& doc, const std::string& name) {
    std::vector<Json> out;
    if (!doc.is_object() || !doc.contains("copies")) return out;
    for (const Json& c : doc["copies"]) {
      if (c["name"] != name) continue;
      out.insert(out.end(), c["differences"].begin(), c["differences"].end());
    }
    return out;
  }

  static bool names(const std::vector<Json>& differences, const std::string& path,
                    const std::string& what) {
    for (const Json& d : differences) {
      if (d["path"] == path && d["what"] == what) return true;
    }
    return false;
  }

  // Writes a mixed tree and waits for every copy to hold it.
  void converge() {
    apply_mix(src(), 30);
    put(src("data.txt"), "the quick brown fox jumps over the lazy dog");
    ASSERT_EQ(::link(src("data.txt").c_str(), src("data-link").c_str()), 0);
    ASSERT_EQ(wait_converged(), "");
  }
};

TEST_F(VerifyTest, ACleanVolumePassesAndIsListedInTheHistory) {
  ASSERT_TRUE(start_all());
  converge();
  auto v = verify({"--replicas", "--read-data"});
  ASSERT_EQ(v.exit, 0) << v.output;
  EXPECT_EQ(v.doc["result"], "clean") << v.doc.dump(2);
  EXPECT_EQ(v.doc["checked"], "node, replicas, data");
  ASSERT_EQ(v.doc["copies"].size(), 3u) << v.doc.dump(2);  // the mirror, r1 and r2
  for (const Json& c : v.doc["copies"]) {
    EXPECT_TRUE(c["checked"].get<bool>()) << c.dump();
    EXPECT_GT(c["entries"].get<uint64_t>(), 30u) << c.dump();
  }

  auto plain = bkptool({"verify", node_name, src()});
  EXPECT_EQ(plain.exit_code(), 0) << plain.output;
  EXPECT_NE(plain.out.find("mirror: same"), std::string::npos) << plain.output;

  std::string why;
  auto history = bkptool_json({"history", node_name, src()}, &why);
  ASSERT_TRUE(history) << why;
  ASSERT_EQ((*history)["verifies"].size(), 2u) << history->dump(2);
  EXPECT_EQ((*history)["verifies"][0]["result"], "clean");
  EXPECT_EQ((*history)["verifies"][0]["checked"], "node");  // newest first
  EXPECT_EQ((*history)["verifies"][1]["checked"], "node, replicas, data");
  auto table = bkptool({"history", node_name, src()});
  EXPECT_NE(table.out.find("verify clean"), std::string::npos) << table.output;
}

TEST_F(VerifyTest, AByteFlippedInTheMirrorIsFoundByItsContent) {
  ASSERT_TRUE(start_all("1h", /*with_replicators=*/false));
  converge();
  // Bit rot: the byte changes, the file's size and times do not.
  const std::string victim = mirror() + "/data.txt";
  struct stat st{};
  ASSERT_EQ(::stat(victim.c_str(), &st), 0);
  ASSERT_TRUE(testutil::flip_byte(victim, 4));
  const timespec times[2] = {st.st_atim, st.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, victim.c_str(), times, 0), 0);

  auto meta = verify({});
  EXPECT_EQ(meta.exit, 0) << "metadata alone cannot see it\n" << meta.output;
  auto data = verify({"--read-data"});
  EXPECT_EQ(data.exit, 10) << data.output;
  EXPECT_EQ(data.doc["result"], "differs") << data.doc.dump(2);
  auto found = differences_of(data.doc, "mirror");
  EXPECT_TRUE(names(found, "data.txt", "content")) << data.doc.dump(2);
  EXPECT_TRUE(names(found, "data-link", "content")) << data.doc.dump(2);  // the same file
  EXPECT_EQ(found.size(), 2u) << data.doc.dump(2);

  // A flip that moved the mtime (an ordinary write to the mirror) shows without --read-data.
  ASSERT_TRUE(testutil::flip_byte(victim, 5));
  auto touched = verify({});
  EXPECT_EQ(touched.exit, 10) << touched.output;
  EXPECT_TRUE(names(differences_of(touched.doc, "mirror"), "data.txt", "mtime"))
      << touched.doc.dump(2);
  auto text = bkptool({"verify", node_name, src()});
  EXPECT_EQ(text.exit_code(), 10);
  EXPECT_NE(text.out.find("data.txt: mtime:"), std::string::npos) << text.output;
}

TEST_F(VerifyTest, AFileRemovedFromAReplicaIsFound) {
  ASSERT_TRUE(start_all());
  converge();
  ASSERT_EQ(::unlink((replica(0) + "/data.txt").c_str()), 0);
  auto v = verify({"--replicas"});
  EXPECT_EQ(v.exit, 10) << v.output;
  EXPECT_TRUE(names(differences_of(v.doc, "r1"), "data.txt", "missing")) << v.doc.dump(2);
  EXPECT_TRUE(differences_of(v.doc, "r2").empty()) << v.doc.dump(2);
  EXPECT_TRUE(differences_of(v.doc, "mirror").empty()) << v.doc.dump(2);
  // Without --replicas only the mirror is compared: clean.
  EXPECT_EQ(verify({}).exit, 0);

  // A placed replica that is away cannot be checked: exit 1, unless something differs.
  ASSERT_TRUE(kill_replicator(0));
  ASSERT_TRUE(kill_replicator(1));
  auto away = verify({"--replicas"});
  EXPECT_EQ(away.exit, 1) << away.output;
  EXPECT_EQ(away.doc["result"], "failed") << away.doc.dump(2);
}

TEST_F(VerifyTest, ATruncatedSnapshotIsFound) {
  ASSERT_TRUE(start_all("2s", /*with_replicators=*/false));
  std::string why;
  auto fresh = runs_after_change([&] { write_big_file(src("big.bin"), 12 * kMiB, 9); }, &why);
  ASSERT_TRUE(fresh) << why;
  auto snaps = snapshots(&why);
  ASSERT_TRUE(snaps && !snaps->empty()) << why;
  auto clean = verify({"--snapshots"});
  ASSERT_EQ(clean.exit, 0) << clean.output;

  const std::string id = (*snaps)[0]["id"];
  const std::string archive = snapshots_dir() + "/" + id + ".tgz";
  struct stat st{};
  ASSERT_EQ(::stat(archive.c_str(), &st), 0);
  ASSERT_EQ(::truncate(archive.c_str(), st.st_size / 2), 0);
  auto v = verify({"--snapshots"});
  EXPECT_EQ(v.exit, 10) << v.output;
  auto found = differences_of(v.doc, id);
  EXPECT_TRUE(names(found, id + ".tgz", "parts")) << v.doc.dump(2);
  EXPECT_TRUE(names(found, id + ".tgz", "archive")) << v.doc.dump(2);
}

// With --replicas, --snapshots also asks each replica which snapshot copies it holds: a copy the
// catalog says a replica stored and that is gone from it is a difference of that replica's.
TEST_F(VerifyTest, ASnapshotCopyLostOnAReplicaIsFound) {
  ASSERT_TRUE(start_all("2s"));
  std::string why;
  auto fresh = runs_after_change([&] { put(src("f"), "snapshot me"); }, &why);
  ASSERT_TRUE(fresh) << why;
  auto snap = wait_newest_held_by({"r1", "r2"}, 60s, &why);
  ASSERT_TRUE(snap) << why;
  auto clean = verify({"--snapshots", "--replicas"});
  ASSERT_EQ(clean.exit, 0) << clean.doc.dump(2);

  const std::string id = (*snap)["id"];
  const std::string copy = replica_root(0) + "/.snapshots/" + node_name + "/" +
                           escape_path(src()) + "/" + id + ".tgz";
  ASSERT_EQ(::unlink(copy.c_str()), 0) << copy;
  auto v = verify({"--snapshots", "--replicas"});
  EXPECT_EQ(v.exit, 10) << v.output;
  std::vector<Json> lost;
  for (const Json& c : v.doc["copies"]) {
    if (c["kind"] == "snapshot copies" && c["name"] == "r1") {
      lost.insert(lost.end(), c["differences"].begin(), c["differences"].end());
    }
  }
  EXPECT_TRUE(names(lost, id + ".tgz", "missing")) << v.doc.dump(2);
}

// Changes in flight are not differences: while the application keeps appending, creating and
// deleting files through the mount, a verify of every copy, contents included, finds nothing
// that differs (the changed entries are counted as changed during the verify; a copy still
// catching up is "not checked", never "differs").
TEST_F(VerifyTest, ChangesInFlightAreNotReportedAsDifferences) {
  ASSERT_TRUE(start_all());
  converge();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> rounds{0};
  std::thread writer([&] {
    const std::string chunk = random_string(64 * 1024, 3);
    while (!stop) {
      const uint64_t n = rounds++;
      append(src("busy.log"), chunk);
      put(src("churn-" + std::to_string(n % 8)), chunk.substr(0, 100 + n % 1000));
      if (n >= 8) {
        ASSERT_EQ(::unlink(src("churn-" + std::to_string((n - 8) % 8)).c_str()), 0);
      }
      int fd = ::open(src("busy.log").c_str(), O_RDONLY);
      ASSERT_GE(fd, 0);
      ::fsync(fd);  // paces the writer by the disk, not by a timer
      ::close(fd);
    }
  });
  ASSERT_TRUE(testutil::wait_until([&] { return rounds > 20; }, 30s));
  auto v = verify({"--replicas", "--read-data"});
  stop = true;
  writer.join();
  EXPECT_NE(v.exit, 10) << v.doc.dump(2);
  EXPECT_NE(v.doc["result"], "differs") << v.doc.dump(2);
  EXPECT_TRUE(v.exit == 0 || v.exit == 1) << v.output;
  EXPECT_GT(rounds.load(), 20u);
  uint64_t changed = 0;
  for (const Json& c : v.doc["copies"]) changed += c["changed_during"].get<uint64_t>();
  EXPECT_GT(changed, 0u) << "the writer changed nothing the verify saw: " << v.doc.dump(2);
}

// backupd.toml verify_every_seconds: every registered volume is verified on its own, and the
// verify is in the history like one bkptool asked for.
TEST_F(VerifyTest, AScheduledVerifyIsRecordedInTheHistory) {
  const std::string config = scratch_dir("config") + "/backupd.toml";
  testutil::write_file(config, "verify_every_seconds = 1\n");
  backupd_args = {"--config", config};
  ASSERT_TRUE(start_all());
  converge();
  std::string why;
  std::optional<Json> history;
  auto verified = [&] {
    history = bkptool_json({"history", node_name, src()}, &why);
    return history && !(*history)["verifies"].empty();
  };
  ASSERT_TRUE(testutil::wait_until(verified, 60s)) << why << log_text("backupd");
  const Json& last = (*history)["verifies"][0];
  EXPECT_EQ(last["checked"], "node, replicas, snapshots") << last.dump();
  EXPECT_NE(last["result"], "differs") << last.dump() << log_text("backupd");
}

}  // namespace
}  // namespace bkp::it
