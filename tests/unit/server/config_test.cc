// backupd's control socket settings: the default path, the config key and the flag over it, and
// a control_group that names no group refused as a configuration error naming the key; the
// bounds of max_queued_ops and snapshot_threads.
#include <gtest/gtest.h>
#include <grp.h>

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
  Options bare;
  bare.state_dir = "/tmp/state";
  EXPECT_EQ(load_settings(bare)->max_queued_ops, 131072);
  auto s = load_settings(with_config("max_queued_ops = 64\n"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->max_queued_ops, 64);
  auto bad = load_settings(with_config("max_queued_ops = 0\n"));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("key 'max_queued_ops'"), std::string::npos)
      << bad.error().message;
}

TEST_F(ConfigTest, SnapshotThreadsDefaultToOnePerCpuAndAreChecked) {
  Options bare;
  bare.state_dir = "/tmp/state";
  EXPECT_EQ(load_settings(bare)->snapshot_threads, 0);
  auto s = load_settings(with_config("snapshot_threads = 1\n"));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->snapshot_threads, 1);
  auto bad = load_settings(with_config("snapshot_threads = -1\n"));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("key 'snapshot_threads'"), std::string::npos)
      << bad.error().message;
}

}  // namespace
}  // namespace bkp::server
