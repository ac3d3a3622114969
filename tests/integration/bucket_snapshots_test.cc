// Snapshots in S3-compatible storage (issue 16, item 3; server/s3_store.h), with a real radosgw
// (tests/scale/ceph.sh, a CTest fixture): archives are written to the bucket and nowhere else,
// rotated there, copied to the replicas from there, and restored from there equal to the source;
// a store that refuses us or cannot be reached fails the run with its reason, and backupd goes
// on serving the volume.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/path.h"
#include "server/s3_client.h"
#include "tests/integration/control.h"
#include "tests/integration/workload.h"
#include "tests/s3/s3_env.h"

namespace bkp::it {
namespace {

class BucketSnapshotsTest : public ControlTest {
 protected:
  void SetUp() override {
    std::string why;
    auto credentials = server::test_s3_credentials(&why);
    if (!credentials) GTEST_SKIP() << why;
    credentials_ = *credentials;
    static int n = 0;
    bucket_ = "bkp-it-" + std::to_string(::getpid()) + "-" + std::to_string(++n);
    ControlTest::SetUp();
  }

  // backupd's config: archives to s3://BUCKET/backups with these credentials, keeping `keep`.
  void use_store(const server::S3Credentials& c, int keep = 10) {
    const std::string dir = scratch_dir("config");
    const std::string secret = dir + "/s3.toml";
    put(secret, server::s3_credentials_toml(c), 0600);
    put(dir + "/backupd.toml", "snapshot_store = \"s3://" + bucket_ +
                                   "/backups\"\nsnapshot_store_credentials = \"" + secret +
                                   "\"\nkeep_snapshots = " + std::to_string(keep) + "\n");
    backupd_args = {"--config", dir + "/backupd.toml"};
  }

  // The keys in the bucket under this volume's prefix, sorted.
  std::vector<std::string> stored() {
    auto client = server::S3Client::create(credentials_);
    EXPECT_TRUE(client);
    if (!client) return {};
    auto objects = client->list_objects(bucket_, "");
    EXPECT_TRUE(objects) << objects.error().message;
    std::vector<std::string> keys;
    for (const auto& o : objects.value_or(std::vector<server::S3Object>{})) keys.push_back(o.key);
    return keys;
  }
  std::string key_of(const std::string& id, const std::string& suffix = ".tgz") const {
    return "backups/" + node_name + "/" + escape_path(src()) + "/" + id + suffix;
  }

  // `bkptool --json run`: the run's JSON (a failed run exits 1 with it), or nullopt (and a test
  // failure) if bkptool said something else.
  std::optional<Json> run_now() {
    auto r = bkptool({"--json", "run", node_name, src()});
    Json doc = Json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    const bool ran = doc.is_object() && doc.contains("run") &&
                     r.exit_code() == (doc["run"].value("status", "") == "failed" ? 1 : 0);
    EXPECT_TRUE(ran) << "bkptool run: exit " << r.exit_code() << "\n" << r.output;
    return ran ? std::optional<Json>(doc["run"]) : std::nullopt;
  }

  // backupd with these credentials starts, and fails a run with a reason that says `why`
  // (something of the store's error); the volume still streams afterwards.
  void expect_failed_runs(const server::S3Credentials& c, const std::string& why) {
    use_store(c);
    ASSERT_TRUE(start_all("1h", /*with_replicators=*/false));
    put(src("f"), "one");
    ASSERT_EQ(wait_converged(), "");
    auto run = run_now();
    ASSERT_TRUE(run);
    EXPECT_EQ((*run)["status"], "failed") << run->dump();
    EXPECT_NE(run->value("error", "").find(why), std::string::npos) << run->dump();
    put(src("g"), "two");
    EXPECT_EQ(wait_converged(), "");
    EXPECT_TRUE(backupd()->alive());
  }

  server::S3Credentials credentials_;
  std::string bucket_;
};

TEST_F(BucketSnapshotsTest, ArchivesLiveInTheBucketRotateThereAndRestoreEqualToTheSource) {
  use_store(credentials_, /*keep=*/2);
  copies = "3";  // the mirror and both replicators: each gets its copies from the bucket
  ASSERT_TRUE(start_all("1h"));
  std::vector<std::string> ids;
  for (int round = 0; round < 3; ++round) {
    if (round == 0) {
      apply_mix(src(), 10);
      // Incompressible and over one 16 MiB upload part: the first archive is a multipart upload.
      write_big_file(src("big.bin"), 24 * kMiB, 11);
    } else {
      put(src("round" + std::to_string(round)), std::string(1000 * round, 'r'));
    }
    ASSERT_EQ(wait_converged(), "");
    auto run = run_now();
    ASSERT_TRUE(run);
    ASSERT_EQ((*run)["status"], "written") << run->dump() << log_text("backupd");
    ids.push_back((*run)["snapshot"]);
  }
  EXPECT_EQ(stored(), (std::vector<std::string>{key_of(ids[1], ".ids"), key_of(ids[1]),
                                                key_of(ids[2], ".ids"), key_of(ids[2])}))
      << "the bucket keeps the newest two archives with their file ids, and nothing else";
  EXPECT_EQ(tgz_files(), std::vector<std::string>{}) << "no archive on backupd's disk";
  EXPECT_EQ(tmp_files(), std::vector<std::string>{});

  std::string why;
  auto listed = snapshots(&why);
  ASSERT_TRUE(listed) << why;
  ASSERT_EQ(listed->size(), 2u) << listed->dump();
  EXPECT_EQ((*listed)[0]["id"], ids[2]);
  const std::string out = scratch_dir("restored");
  auto restored = bkptool({"restore", node_name, src(), "--to", out});
  ASSERT_EQ(restored.exit_code(), 0) << restored.output << log_text("backupd");
  EXPECT_EQ(compare_trees(src(), out), "");

  // The replicas' copies come from the bucket too, checked part by part as they arrive.
  auto held = wait_newest_held_by({"r1", "r2"}, 90s, &why);
  ASSERT_TRUE(held) << why;
  EXPECT_EQ((*held)["id"], ids[2]);

  auto verified = bkptool({"verify", node_name, src()});
  EXPECT_EQ(verified.exit_code(), 0) << verified.output;
}

TEST_F(BucketSnapshotsTest, AStoreThatRefusesUsFailsTheRunWithItsReason) {
  server::S3Credentials wrong = credentials_;
  wrong.secret_key = "not-the-secret";
  expect_failed_runs(wrong, "SignatureDoesNotMatch");
}

TEST_F(BucketSnapshotsTest, AStoreThatCannotBeReachedFailsTheRunWithItsReason) {
  server::S3Credentials away = credentials_;
  away.endpoint = "http://127.0.0.1:" + std::to_string(free_port());
  expect_failed_runs(away, "unreachable");
  EXPECT_NE(log_text("backupd").find("runs fail until it answers"), std::string::npos);
}

}  // namespace
}  // namespace bkp::it
