// backupd's control socket settings: the default path, the config key and the flag over it, and
// a control_group that names no group refused as a configuration error naming the key; the
// bounds of max_queued_ops, forward_cache_mib and snapshot_threads; the scheduled verify keys;
// the S3 snapshot store and its credentials file; the catalog: SQLite in the state directory
// unless a PostgreSQL URI is given.
#include <gtest/gtest.h>
#include <grp.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "server/config.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::server {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  Options with_config(const std::string& text) {
    std::string path = tmp_.sub("backupd.toml");
    std::ofstream(path) << "state_dir = \"/var/lib/backupd\"\n" << text;
    Options o;
    o.config_file = path;
    return o;
  }
  // An integer key: `fallback` without a config file, `good` read back from one, `bad` refused
  // with a message naming the key.
  void expect_int_key(const std::string& key, int Settings::*field, int fallback, int good,
                      int bad) {
    Options bare;
    bare.state_dir = "/tmp/state";
    EXPECT_EQ((*load_settings(bare)).*field, fallback);
    auto s = load_settings(with_config(key + " = " + std::to_string(good) + "\n"));
    ASSERT_TRUE(s) << s.error().message;
    EXPECT_EQ((*s).*field, good);
    auto refused = load_settings(with_config(key + " = " + std::to_string(bad) + "\n"));
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message.find("key '" + key + "'"), std::string::npos)
        << refused.error().message;
  }
  testutil::TempDir tmp_{"bkp-config"};
};

TEST_F(ConfigTest, ControlSocketDefaultKeyAndFlag) {
  Options bare;
  bare.state_dir = "/tmp/state";
  EXPECT_EQ(load_settings(bare)->control_socket, "/run/backupd/control.sock");
  Options o = with_config("control_socket = \"/run/b/c.sock\"\n");
  auto s = load_settings(o);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->control_socket, "/run/b/c.sock");
  EXPECT_FALSE(s->control_gid);
  o.control_socket = "/tmp/flag.sock";
  EXPECT_EQ(load_settings(o)->control_socket, "/tmp/flag.sock");
}

TEST_F(ConfigTest, ControlGroupIsLookedUp) {
  group* root = getgrgid(0);
  ASSERT_NE(root, nullptr);
  auto s = load_settings(with_config(std::string("control_group = \"") + root->gr_name + "\"\n"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->control_gid, 0u);
  auto bad = load_settings(with_config("control_group = \"no-such-group-here\"\n"));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("key 'control_group'"), std::string::npos)
      << bad.error().message;
  EXPECT_NE(bad.error().message.find("no-such-group-here"), std::string::npos);
}

TEST_F(ConfigTest, MaxQueuedOpsDefaultsAndIsChecked) {
  expect_int_key("max_queued_ops", &Settings::max_queued_ops, 131072, 64, 0);
}

TEST_F(ConfigTest, ForwardCacheMibDefaultsAndIsChecked) {
  expect_int_key("forward_cache_mib", &Settings::forward_cache_mib, 256, 0, -1);
}

TEST_F(ConfigTest, SnapshotThreadsDefaultToOnePerCpuAndAreChecked) {
  expect_int_key("snapshot_threads", &Settings::snapshot_threads, 0, 1, -1);
}

TEST_F(ConfigTest, ScheduledVerifyIsOffByDefaultAndChecked) {
  expect_int_key("verify_every_seconds", &Settings::verify_every_seconds, 0, 86400, -1);
  EXPECT_FALSE(load_settings(with_config(""))->verify_read_data);
  auto s = load_settings(with_config("verify_every_seconds = 3600\nverify_read_data = true\n"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->verify_every_seconds, 3600);
  EXPECT_TRUE(s->verify_read_data);
}

// snapshot_store: an s3:// URL with a private credentials file, read when the config is; a
// store without credentials, credentials without a store, a bad URL or a readable secret are
// configuration errors naming the key.
TEST_F(ConfigTest, SnapshotStoreNeedsAnS3UrlAndPrivateCredentials) {
  EXPECT_FALSE(load_settings(with_config(""))->snapshot_store);
  const std::string secret = tmp_.sub("s3.toml");
  std::ofstream(secret) << "endpoint = \"http://127.0.0.1:7480\"\nregion = \"default\"\n"
                           "access_key = \"AK\"\nsecret_key = \"SK\"\n";
  ASSERT_EQ(::chmod(secret.c_str(), 0600), 0);
  auto s = load_settings(with_config("snapshot_store = \"s3://backups/site-a\"\n"
                                     "snapshot_store_credentials = \"" + secret + "\"\n"));
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_TRUE(s->snapshot_store);
  EXPECT_EQ(s->snapshot_store->bucket, "backups");
  EXPECT_EQ(s->snapshot_store->prefix, "site-a/");
  EXPECT_EQ(s->snapshot_store_credentials->endpoint, "http://127.0.0.1:7480");

  auto expect_refused = [&](const std::string& text, const std::string& names) {
    auto refused = load_settings(with_config(text));
    ASSERT_FALSE(refused) << text;
    EXPECT_NE(refused.error().message.find(names), std::string::npos) << refused.error().message;
    EXPECT_EQ(refused.error().message.find("SK"), std::string::npos) << "the secret is shown";
  };
  expect_refused("snapshot_store = \"s3://backups\"\n", "'snapshot_store_credentials'");
  expect_refused("snapshot_store_credentials = \"" + secret + "\"\n", "without 'snapshot_store'");
  expect_refused("snapshot_store = \"http://backups\"\nsnapshot_store_credentials = \"" + secret +
                     "\"\n", "key 'snapshot_store'");
  ASSERT_EQ(::chmod(secret.c_str(), 0644), 0);
  expect_refused("snapshot_store = \"s3://backups\"\nsnapshot_store_credentials = \"" + secret +
                     "\"\n", "key 'snapshot_store_credentials'");
}

TEST_F(ConfigTest, TheCatalogIsInTheStateDirectoryUnlessAPostgresUriIsGiven) {
  auto sqlite = load_settings(with_config(""));
  ASSERT_TRUE(sqlite) << sqlite.error().message;
  EXPECT_EQ(catalog_location(*sqlite), "/var/lib/backupd/catalog.db");
  for (const char* uri : {"postgresql://backupd@127.0.0.1:5432/catalog", "postgres://db1/bkp"}) {
    auto pg = load_settings(
        with_config(std::string("catalog = \"") + uri + "\"\nserver_name = \"backup-1\"\n"));
    ASSERT_TRUE(pg) << pg.error().message;
    EXPECT_EQ(catalog_location(*pg), uri);
  }
  EXPECT_EQ(load_settings(with_config(""))->lease_seconds, 30);
  // A shared catalog needs this server's name for its leases, and only then.
  for (const char* half : {"catalog = \"postgres://db1/bkp\"\n", "server_name = \"backup-1\"\n"}) {
    auto alone = load_settings(with_config(half));
    ASSERT_FALSE(alone) << half;
    EXPECT_NE(alone.error().message.find("key 'server_name' goes with a shared catalog"),
              std::string::npos) << alone.error().message;
  }
  auto refused = load_settings(with_config("catalog = \"/var/lib/backupd/other.db\"\n"));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("key 'catalog' must be a PostgreSQL URI"),
            std::string::npos) << refused.error().message;
}

}  // namespace
}  // namespace bkp::server
