// Baseline fidelity (issue 9, item 5): a volume registered with data already in it reaches the
// mirror and both replicas with everything the live stream would carry. Users found xattrs set
// before `bkptool register` missing on the mirror, and a hard link to a symlink arriving as two
// symlinks; the comparer did not look at either. Here the tree holds every such case: xattrs on
// files, directories and the root (user.*) and on symlinks, fifos and devices (trusted.*, the only
// namespace they accept), a value needing an external xattr block, hard links of a symlink, a
// fifo, a socket and a char device, sparse files, owners, modes and times. It is made before
// registration, either on the plain directory before mounting or through the mount before any
// backupd is attached; both are shipped by the baseline scan. Convergence is checked with the
// strict comparer (xattrs, link groups, hole maps), plus a few direct looks at the mirror and a
// replica so a comparer that missed something could not pass this test. A restore of a snapshot
// of the tree must give the tree back the same way.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>

#include "common/unique_fd.h"
#include "tests/integration/cluster.h"
#include "tests/integration/workload.h"

namespace bkp::it {
namespace {

bool is_root() { return geteuid() == 0; }

std::string get_xattr(const std::string& path, const std::string& name) {
  char buf[256];
  ssize_t n = lgetxattr(path.c_str(), name.c_str(), buf, sizeof buf);
  return n < 0 ? std::string("(") + strerror(errno) + ")" : std::string(buf, static_cast<size_t>(n));
}

ino_t inode(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

void make_socket(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  must(path.size() < sizeof addr.sun_path ? 0 : -1, "socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  must(fd ? 0 : -1, "socket");
  must(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), "bind " + path);
}

// Every kind of entry with every kind of metadata a baseline must carry, under root/fid.
void make_fidelity_tree(const std::string& root) {
  auto p = [&](const std::string& rel) { return root + "/fid/" + rel; };
  mkdirs(p("dir"));
  put(p("file"), "a file with xattrs\n", 0640);
  set_xattr(p("file"), "user.k", "v");
  set_xattr(p("file"), "user.binary", std::string("\0\1\2\xff", 4));
  set_xattr(p("file"), "user.big", random_string(3000, 1));  // an external xattr block on ext4
  set_xattr(p("dir"), "user.dir", "on a directory");
  set_xattr(root, "user.root", "on the volume root");

  // 8 MiB with three islands; and 8 KiB whose first 4 KiB are a hole while its st_blocks
  // (data block + xattr block) looks fully allocated.
  put(p("sparse"), "");
  truncate_to(p("sparse"), 8 * kMiB);
  write_at(p("sparse"), 0, "head");
  write_at(p("sparse"), 3 * kMiB + 5, random_string(10000, 2));
  write_at(p("sparse"), 8 * kMiB - 1, "z");
  write_at(p("sparse-xattr"), 4096, random_string(4096, 3));
  set_xattr(p("sparse-xattr"), "user.big", random_string(3000, 4));

  must(symlink("file", p("sym").c_str()), "symlink");
  must(link(p("sym").c_str(), p("dir/sym2").c_str()), "link of a symlink");
  must(lchown(p("sym").c_str(), 65534, 65534), "lchown");
  must(mkfifo(p("fifo").c_str(), 0620), "mkfifo");
  must(link(p("fifo").c_str(), p("dir/fifo2").c_str()), "link of a fifo");
  make_socket(p("sock"));
  must(link(p("sock").c_str(), p("dir/sock2").c_str()), "link of a socket");
  must(chown(p("file").c_str(), 65534, 0), "chown");
  if (is_root()) {
    set_xattr(p("sym"), "trusted.sym", "on the symlink itself");
    set_xattr(p("fifo"), "trusted.fifo", "on the fifo");
    must(mknod(p("null").c_str(), S_IFCHR | 0600, makedev(1, 3)), "mknod");
    must(link(p("null").c_str(), p("dir/null2").c_str()), "link of a device");
    set_xattr(p("null"), "trusted.dev", "on the device");
  }
  set_mtime(p("file"), 1500000000, 1);
  set_mtime(p("sym"), 1500000000, 2);
  set_mtime(p("dir"), 1500000000, 3);
  set_mtime(root + "/fid", 1500000000, 4);
}

class BaselineFidelityTest : public ClusterTest {
 protected:
  // Direct looks at one copy, independent of the comparer.
  void expect_carried(const std::string& copy) {
    auto p = [&](const std::string& rel) { return copy + "/fid/" + rel; };
    EXPECT_EQ(get_xattr(p("file"), "user.k"), "v") << copy;
    EXPECT_EQ(get_xattr(p("dir"), "user.dir"), "on a directory") << copy;
    EXPECT_EQ(get_xattr(copy, "user.root"), "on the volume root") << copy;
    EXPECT_EQ(inode(p("sym")), inode(p("dir/sym2"))) << copy << ": the symlink's names split";
    EXPECT_EQ(inode(p("fifo")), inode(p("dir/fifo2"))) << copy << ": the fifo's names split";
    if (is_root()) {
      EXPECT_EQ(get_xattr(p("dir/sym2"), "trusted.sym"), "on the symlink itself") << copy;
    }
    int fd = open(p("sparse").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << copy;
    EXPECT_EQ(lseek(fd, 4096, SEEK_DATA), static_cast<off_t>(3 * kMiB)) << copy << ": not sparse";
    close(fd);
  }

  void expect_converged_strictly() {
    ASSERT_EQ(wait_converged(), "");
    for (const std::string& copy : {mirror(), replica(0), replica(1)}) expect_carried(copy);
  }
};

TEST_F(BaselineFidelityTest, ATreeMadeBeforeMountingArrivesWhole) {
  make_fidelity_tree(src());
  ASSERT_TRUE(start_all());
  expect_converged_strictly();
}

// A snapshot holds the same tree, restored entry for entry: xattrs on every kind of entry, hard
// links of every kind, holes, owners and times (sockets aside: no archive format holds one, and
// a run leaves them out by design). Snapshots once kept xattrs of files and directories only.
TEST_F(BaselineFidelityTest, ARestoreOfTheTreeIsTheTree) {
  make_fidelity_tree(src());
  ASSERT_TRUE(start_all("1h", /*with_replicators=*/false));
  for (const char* sock : {"fid/sock", "fid/dir/sock2"}) must(unlink(src(sock).c_str()), sock);
  ASSERT_EQ(wait_converged(), "");
  const std::string out = scratch_dir("restored");
  auto r = bkptool({"restore", node_name, src(), "--live", "--to", out});
  ASSERT_EQ(r.exit_code(), 0) << r.output;
  EXPECT_EQ(compare_trees(src(), out), "");
  expect_carried(out);
}

TEST_F(BaselineFidelityTest, ATreeMadeThroughTheMountBeforeRegistrationArrivesWhole) {
  ASSERT_TRUE(mount_source());
  make_fidelity_tree(src());
  make_fidelity_tree(ref());
  EXPECT_EQ(compare_trees(ref(), src(), {.mtime = false}), "") << "backupfs as a passthrough";
  ASSERT_TRUE(start_server());
  ASSERT_TRUE(start_replicators());
  ASSERT_TRUE(register_volume());
  expect_converged_strictly();
}

// A scanned file larger than a batch (stream::kBatchLimits: 64 MiB) is shipped in parts, each
// read past the page cache (common/changes/direct_reader.h), the middle ones too; its size is
// not a multiple of any block. The application writes into it through the mount while the
// baseline runs: whatever a direct read saw of those writes, the copies end equal to the source.
TEST_F(BaselineFidelityTest, AFileLargerThanABatchArrivesWholeWhileItIsWritten) {
  const uint64_t size = 70 * kMiB + 12345;
  mkdirs(src("big"));
  write_big_file(src("big/f.bin"), size, 21);
  ASSERT_TRUE(start_all());
  for (uint64_t i = 0; i < 4; ++i) {
    write_at(src("big/f.bin"), (17 * i + 3) * kMiB + 777, random_string(300000, 40 + i));
  }
  ASSERT_EQ(wait_converged(), "");
  struct stat st {};
  ASSERT_EQ(stat((mirror() + "/big/f.bin").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), size);
}

// A reconcile is a baseline over copies that already hold the tree: what changed on the plain
// directory while backupfs was not mounted reaches every copy too. (Not yet: an xattr removed
// meanwhile stays on the copies, because a baseline only names the xattrs that exist and the
// receiver prunes entries, not xattrs.)
TEST_F(BaselineFidelityTest, ChangesMadeWhileUnmountedAreReconciled) {
  uint16_t node = free_port();
  ASSERT_NE(node, 0);
  make_fidelity_tree(src());
  ASSERT_TRUE(start_server());
  ASSERT_TRUE(start_replicators());
  ASSERT_TRUE(mount_source(node));
  ASSERT_TRUE(register_volume());
  expect_converged_strictly();

  ASSERT_TRUE(unmount_source());
  set_xattr(src("fid/file"), "user.k", "changed while unmounted");
  set_xattr(src("fid/dir"), "user.new", "added while unmounted");
  must(link(src("fid/dir/sym2").c_str(), src("fid/sym3").c_str()), "link of a symlink");
  must(unlink(src("fid/dir/fifo2").c_str()), "unlink");
  ASSERT_TRUE(mount_source(node));
  ASSERT_EQ(wait_converged(), "");
  EXPECT_EQ(get_xattr(replica(1) + "/fid/file", "user.k"), "changed while unmounted");
  EXPECT_EQ(inode(replica(1) + "/fid/sym3"), inode(replica(1) + "/fid/sym"));
}

}  // namespace
}  // namespace bkp::it
