// Device nodes on a backupd that may not create them. Its unit has PrivateDevices=, which takes
// CAP_MKNOD away (issue 15); here backupd runs under setpriv with CAP_MKNOD out of its bounding
// set, as the unit would run it. Its mirror keeps placeholders
// (common/changes/device_placeholders.h), and whatever is read from the mirror must still show
// the device nodes: the replicas' baselines, bkptool verify, snapshots and their restores, with
// hard links (of device nodes, symlinks and fifos, which snapshots now keep as links too),
// renames, a node replaced by a file, removals and a restart of backupd in between.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "tests/integration/control.h"
#include "tests/integration/workload.h"

namespace bkp::it {
namespace {

class DeviceNodesTest : public ControlTest {
 protected:
  struct stat stat_of(const std::string& path) {
    struct stat st{};
    EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
    return st;
  }
  // Entries of the mirror's placeholder index.
  size_t indexed() {
    std::error_code ec;
    std::filesystem::directory_iterator it(volume_dir() + "/ids/devices", ec);
    return ec ? 0 : static_cast<size_t>(std::distance(it, {}));
  }
  void expect_verify_clean() {
    auto v = bkptool({"verify", node_name, src(), "--replicas"});
    EXPECT_EQ(v.exit_code(), 0) << v.output;  // 10: differences, 1: not everything checked
    EXPECT_NE(v.out.find("mirror: same"), std::string::npos) << v.output;
  }
  // `bkptool run` then a restore of that snapshot, compared with the source.
  void expect_snapshot_restores_the_source(const std::string& name) {
    auto run = bkptool({"run", node_name, src()});
    ASSERT_EQ(run.exit_code(), 0) << run.output;
    const std::string to = scratch_dir(name);
    auto r = bkptool({"restore", node_name, src(), "--to", to});
    ASSERT_EQ(r.exit_code(), 0) << r.output;
    EXPECT_EQ(compare_trees(src(), to), "") << name;
    EXPECT_TRUE(S_ISCHR(stat_of(to + "/dev/null").st_mode)) << name;
  }
};

TEST_F(DeviceNodesTest, AMirrorWithoutCapMknodKeepsDeviceNodesForEveryCopy) {
  if (geteuid() != 0) GTEST_SKIP() << "device nodes need root";
  backupd_wrapper = {"/usr/bin/setpriv", "--bounding-set", "-mknod"};
  compare_mirror = false;

  // Made before registration, so the baseline carries them; more follow through the mount.
  mkdirs(src("dev/sub"));
  must(mknod(src("dev/null").c_str(), S_IFCHR | 0620, makedev(1, 3)), "mknod");
  must(link(src("dev/null").c_str(), src("dev/sub/null2").c_str()), "link of a device");
  must(chown(src("dev/null").c_str(), 65534, 65534), "chown");
  must(mknod(src("dev/loop").c_str(), S_IFBLK | 0600, makedev(7, 0)), "mknod");
  must(mkfifo(src("dev/fifo").c_str(), 0640), "mkfifo");
  must(link(src("dev/fifo").c_str(), src("dev/sub/fifo2").c_str()), "link of a fifo");
  must(symlink("null", src("dev/sym").c_str()), "symlink");
  must(link(src("dev/sym").c_str(), src("dev/sub/sym2").c_str()), "link of a symlink");
  put(src("dev/file"), "a file among them\n");
  set_mtime(src("dev/null"), 1500000000, 7);
  ASSERT_TRUE(start_all());
  ASSERT_EQ(wait_converged(), "");
  EXPECT_TRUE(S_ISREG(stat_of(mirror() + "/dev/null").st_mode))
      << "a real device node in the mirror: backupd kept CAP_MKNOD";
  EXPECT_TRUE(S_ISBLK(stat_of(replica(0) + "/dev/loop").st_mode));
  EXPECT_EQ(indexed(), 2u);
  expect_verify_clean();
  expect_snapshot_restores_the_source("first");

  // Live: a new node, one renamed over another, one replaced by a file, a link removed.
  must(mknod(src("dev/tty").c_str(), S_IFCHR | 0666, makedev(5, 0)), "mknod");
  must(mknod(src("dev/zero").c_str(), S_IFCHR | 0666, makedev(1, 5)), "mknod");
  must(rename(src("dev/zero").c_str(), src("dev/tty").c_str()), "rename over a device");
  must(unlink(src("dev/loop").c_str()), "unlink");
  put(src("dev/loop"), "a file where the block device was\n");
  must(unlink(src("dev/sub/null2").c_str()), "unlink");
  must(chmod(src("dev/null").c_str(), 0600), "chmod");
  ASSERT_EQ(wait_converged(), "");
  EXPECT_EQ(stat_of(replica(1) + "/dev/tty").st_rdev, makedev(1, 5));
  EXPECT_EQ(indexed(), 2u) << "null and tty: the index entries of loop and the old tty went";
  expect_verify_clean();

  // A restart reads the placeholders back from the mirror's index.
  ASSERT_TRUE(stop_server());
  ASSERT_TRUE(start_server(port()));
  must(link(src("dev/tty").c_str(), src("dev/sub/tty2").c_str()), "link of a device");
  ASSERT_EQ(wait_converged(), "");
  expect_verify_clean();
  expect_snapshot_restores_the_source("after-restart");
  EXPECT_EQ(server_error_lines(), 0u) << log_text("backupd");
}

}  // namespace
}  // namespace bkp::it
