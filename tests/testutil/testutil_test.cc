// Tests of the test harness. The integration suite's verdicts are only as good as the tree
// comparer (it must see every kind of difference it claims to) and the process helpers (they
// must really clean up), so both are checked here against plain directories.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "tests/testutil/daemon.h"
#include "tests/testutil/files.h"
#include "tests/testutil/mounted_fs.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/tree_compare.h"
#include "tests/testutil/wait.h"

namespace bkp::testutil {
namespace {

using namespace std::chrono_literals;

void set_mtime(const std::string& path, time_t sec, long nsec) {
  timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << path;
}

// Two identical small trees: a file, a dir with a file, a symlink, a hard-linked pair. All
// mtimes fixed so the trees are equal to the nanosecond.
class TreeCompareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = tmp_.mkdir("a");
    b_ = tmp_.mkdir("b");
    for (const std::string& root : {a_, b_}) build(root);
  }

  static void build(const std::string& root) {
    write_file(root + "/f", "hello");
    std::filesystem::create_directory(root + "/d");
    write_file(root + "/d/g", "world");
    write_file(root + "/h1", "linked");
    ASSERT_EQ(link((root + "/h1").c_str(), (root + "/d/h2").c_str()), 0);
    ASSERT_EQ(symlink("d/g", (root + "/s").c_str()), 0);
    for (const char* p : {"f", "d/g", "h1", "s", "d", "."}) set_mtime(root + "/" + p, 1000, 5);
  }

  std::string diff(const CompareOptions& o = {}) { return compare_trees(a_, b_, o); }

  TempDir tmp_{"bkp-treecmp"};
  std::string a_, b_;
};

TEST_F(TreeCompareTest, EqualTreesAreEqual) {
  EXPECT_EQ(diff(), "");
  EXPECT_EQ(compare_trees(a_, a_), "");
}

TEST_F(TreeCompareTest, SeesAModeDifference) {
  ASSERT_EQ(chmod((b_ + "/f").c_str(), 0600), 0);
  EXPECT_EQ(diff(), "f: mode 100644 vs 100600");
}

TEST_F(TreeCompareTest, SeesAnOwnerDifference) {
  if (geteuid() != 0) GTEST_SKIP() << "chown needs root";
  ASSERT_EQ(lchown((b_ + "/d/g").c_str(), 65534, 65534), 0);
  EXPECT_EQ(diff(), "d/g: owner 0:0 vs 65534:65534");
  EXPECT_EQ(diff({.owner = false}), "");
}

TEST_F(TreeCompareTest, SeesASizeDifference) {
  write_file(b_ + "/f", "hello!");
  set_mtime(b_ + "/f", 1000, 5);
  EXPECT_EQ(diff(), "f: size 5 vs 6");
}

TEST_F(TreeCompareTest, SeesAContentDifferenceOfEqualSize) {
  write_file(b_ + "/d/g", "wOrld");
  set_mtime(b_ + "/d/g", 1000, 5);
  EXPECT_EQ(diff(), "d/g: content differs at offset 1");
  EXPECT_EQ(diff({.content = false}), "");
}

TEST_F(TreeCompareTest, SeesADifferenceDeepInALargeFile) {
  auto data = random_bytes(3 << 20, 9);
  std::string s(data.begin(), data.end());
  write_file(a_ + "/big", s);
  s[(2 << 20) + 17] ^= 1;
  write_file(b_ + "/big", s);
  set_mtime(a_ + "/big", 1, 0);
  set_mtime(b_ + "/big", 1, 0);
  set_mtime(a_ + "/.", 1000, 5);
  set_mtime(b_ + "/.", 1000, 5);
  EXPECT_EQ(diff(), "big: content differs at offset " + std::to_string((2 << 20) + 17));
}

TEST_F(TreeCompareTest, SeesANanosecondMtimeDifference) {
  set_mtime(b_ + "/d", 1000, 6);
  EXPECT_EQ(diff(), "d: mtime 1000.000000005 vs 1000.000000006");
  EXPECT_EQ(diff({.mtime = false}), "");
}

TEST_F(TreeCompareTest, SeesASymlinkMtimeDifference) {
  set_mtime(b_ + "/s", 2000, 5);
  EXPECT_EQ(diff(), "s: mtime 1000.000000005 vs 2000.000000005");
}

TEST_F(TreeCompareTest, SeesTheRootsOwnAttributes) {
  ASSERT_EQ(chmod(b_.c_str(), 0700), 0);
  EXPECT_EQ(diff(), ".: mode 40755 vs 40700");
  EXPECT_EQ(diff({.root_attrs = false}), "");
}

TEST_F(TreeCompareTest, SeesASymlinkTargetDifference) {
  ASSERT_EQ(unlink((b_ + "/s").c_str()), 0);
  ASSERT_EQ(symlink("d/x", (b_ + "/s").c_str()), 0);
  set_mtime(b_ + "/s", 1000, 5);
  set_mtime(b_ + "/.", 1000, 5);
  EXPECT_EQ(diff(), "s: symlink target 'd/g' vs 'd/x'");
}

TEST_F(TreeCompareTest, DoesNotFollowSymlinks) {
  // Same target text, but in b the target is missing: still equal, links compared as links.
  ASSERT_EQ(unlink((b_ + "/d/g").c_str()), 0);
  ASSERT_EQ(unlink((a_ + "/d/g").c_str()), 0);
  set_mtime(a_ + "/d", 1000, 5);
  set_mtime(b_ + "/d", 1000, 5);
  EXPECT_EQ(diff(), "");
}

TEST_F(TreeCompareTest, SeesATypeDifference) {
  ASSERT_EQ(unlink((b_ + "/f").c_str()), 0);
  ASSERT_EQ(mkdir((b_ + "/f").c_str(), 0755), 0);
  set_mtime(b_ + "/f", 1000, 5);
  set_mtime(b_ + "/.", 1000, 5);
  EXPECT_EQ(diff(), "f: type file vs directory");
}

TEST_F(TreeCompareTest, SeesMissingAndExtraEntries) {
  ASSERT_EQ(unlink((b_ + "/d/g").c_str()), 0);
  EXPECT_EQ(diff(), "d/g: only in " + a_);
  EXPECT_EQ(compare_trees(b_, a_), "d/g: only in " + a_);
  write_file(b_ + "/zz", "");
  EXPECT_EQ(compare_trees(a_, b_, {.mtime = false}), "d/g: only in " + a_);
}

TEST_F(TreeCompareTest, SeesABrokenHardLink) {
  // b: h1 and d/h2 become two separate files with identical content and metadata.
  ASSERT_EQ(unlink((b_ + "/d/h2").c_str()), 0);
  write_file(b_ + "/d/h2", "linked");
  set_mtime(b_ + "/d/h2", 1000, 5);
  set_mtime(b_ + "/d", 1000, 5);
  EXPECT_EQ(diff(), "d/h2: hard links {d/h2, h1} vs {d/h2}");
}

TEST_F(TreeCompareTest, IgnoresLinksOutsideTheTree) {
  // The mirror keeps one more link per file under ids/: st_nlink differs, the partition not.
  std::string ids = tmp_.mkdir("ids");
  ASSERT_EQ(link((b_ + "/f").c_str(), (ids + "/0000000000000001").c_str()), 0);
  ASSERT_EQ(link((b_ + "/h1").c_str(), (ids + "/0000000000000002").c_str()), 0);
  EXPECT_EQ(diff(), "");
}

void set_xattr(const std::string& path, const std::string& name, const std::string& value) {
  ASSERT_EQ(lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0), 0)
      << path << " " << name << ": " << strerror(errno);
}

TEST_F(TreeCompareTest, SeesAMissingXattr) {
  set_xattr(a_ + "/d/g", "user.k", "v");
  EXPECT_EQ(diff(), "d/g: xattr user.k only in " + a_);
  EXPECT_EQ(compare_trees(b_, a_), "d/g: xattr user.k only in " + a_);
  EXPECT_EQ(diff({.xattrs = false}), "");
}

TEST_F(TreeCompareTest, SeesAnXattrValueDifference) {
  set_xattr(a_ + "/d", "user.k", "v1");
  set_xattr(b_ + "/d", "user.k", std::string("v\0\n", 3));
  EXPECT_EQ(diff(), "d: xattr user.k value 'v1' vs 'v\\x00\\x0a'");
}

TEST_F(TreeCompareTest, SeesXattrsOfTheRootAndOfSymlinks) {
  set_xattr(b_, "user.root", "r");
  EXPECT_EQ(diff(), ".: xattr user.root only in " + b_);
  EXPECT_EQ(diff({.root_attrs = false}), "");
  if (geteuid() != 0) GTEST_SKIP() << "xattrs of a symlink are trusted.*: need root";
  set_xattr(a_, "user.root", "r");
  set_xattr(a_ + "/s", "trusted.k", "on the link");
  EXPECT_EQ(diff(), "s: xattr trusted.k only in " + a_);
  set_xattr(b_ + "/s", "trusted.k", "on the link");
  EXPECT_EQ(diff(), "");
}

// Both trees: s2 is a second name of the symlink s, p2 of the fifo p.
class SpecialLinksTest : public TreeCompareTest {
 protected:
  void SetUp() override {
    TreeCompareTest::SetUp();
    for (const std::string& root : {a_, b_}) {
      ASSERT_EQ(link((root + "/s").c_str(), (root + "/d/s2").c_str()), 0);  // does not follow
      ASSERT_EQ(mkfifo((root + "/p").c_str(), 0644), 0);
      ASSERT_EQ(link((root + "/p").c_str(), (root + "/d/p2").c_str()), 0);
      for (const char* p : {"p", "d", "."}) set_mtime(root + "/" + p, 1000, 5);
    }
  }
  // Replaces b's second name `rel` with a separate copy made by `make`, same metadata.
  void split(const std::string& rel, const std::function<int(const char*)>& make) {
    std::string path = b_ + "/" + rel;
    ASSERT_EQ(unlink(path.c_str()), 0);
    ASSERT_EQ(make(path.c_str()), 0);
    set_mtime(path, 1000, 5);
    set_mtime(b_ + "/d", 1000, 5);
  }
};

TEST_F(SpecialLinksTest, EqualWhenBothKeepTheLinks) { EXPECT_EQ(diff(), ""); }

TEST_F(SpecialLinksTest, SeesASymlinkLinkGroupSplitIntoTwoSymlinks) {
  split("d/s2", [](const char* p) { return symlink("d/g", p); });
  EXPECT_EQ(diff(), "d/s2: hard links {d/s2, s} vs {d/s2}");
}

TEST_F(SpecialLinksTest, SeesAFifoLinkGroupSplitIntoTwoFifos) {
  split("d/p2", [](const char* p) { return mkfifo(p, 0644); });
  EXPECT_EQ(diff(), "d/p2: hard links {d/p2, p} vs {d/p2}");
}

// 64 KiB with "data" at 32 KiB: one 4 KiB block of data, holes around it.
void make_sparse(const std::string& path) {
  write_file(path, "");
  ASSERT_EQ(truncate(path.c_str(), 64 << 10), 0);
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, "data", 4, 32 << 10), 4);
  close(fd);
  set_mtime(path, 1000, 5);
}

// Equal bytes, but b has the holes written as zeros: the files differ on disk.
TEST_F(TreeCompareTest, SeesAHoleWhereTheOtherHasWrittenZeros) {
  make_sparse(a_ + "/sp");
  std::string zeros(64 << 10, '\0');
  write_file(b_ + "/sp", zeros.replace(32 << 10, 4, "data"));
  set_mtime(b_ + "/sp", 1000, 5);
  for (const std::string& root : {a_, b_}) set_mtime(root, 1000, 5);
  EXPECT_EQ(diff(), "sp: data regions [32768, 36864) vs [0, 65536)");
  EXPECT_EQ(diff({.holes = false}), "");
  make_sparse(b_ + "/sp");
  EXPECT_EQ(diff(), "");
}

TEST_F(TreeCompareTest, CountsTreeStats) {
  auto s = tree_stats(a_);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->files, 4u);  // names: f, d/g, h1, d/h2
  EXPECT_EQ(s->dirs, 1u);
  EXPECT_EQ(s->symlinks, 1u);
  EXPECT_EQ(s->bytes, 5u + 5u + 6u);  // the hard-linked inode once
}

TEST(TempDirTest, RemovesItself) {
  std::string path;
  {
    TempDir t("bkp-tempdir");
    path = t.path();
    write_file(t.mkdir("x/y") + "/f", "data");
    EXPECT_TRUE(std::filesystem::exists(path + "/x/y/f"));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(TempDirTest, RefusesToDeleteThroughALiveMount) {
  if (geteuid() != 0) GTEST_SKIP() << "bind mounts need root";
  TempDir outside("bkp-outside");
  write_file(outside.path() + "/precious", "keep me");
  std::string mnt;
  {
    TempDir t("bkp-tempdir");
    mnt = t.mkdir("mnt");
    if (mount(outside.path().c_str(), mnt.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      GTEST_SKIP() << "bind mount not permitted here: " << strerror(errno);
    }
    ASSERT_EQ(mounts_under(t.path()), std::vector<std::string>{mnt});
  }
  EXPECT_TRUE(std::filesystem::exists(outside.path() + "/precious"));
  ASSERT_EQ(umount(mnt.c_str()), 0);
  std::filesystem::remove_all(std::filesystem::path(mnt).parent_path());
}

TEST(DaemonTest, CapturesOutputAndStopsTheWholeGroup) {
  TempDir t("bkp-daemon");
  pid_t child = 0;
  {
    Daemon d("sh",
             {"/bin/sh", "-c", "echo started; sleep 300 & echo $! > " + t.sub("pid") + "; wait"},
             t.sub("log"));
    ASSERT_TRUE(wait_until(
        [&] {
          auto text = read_file(t.sub("pid"));
          return text && !text->empty() && text->back() == '\n';
        },
        10s, 10ms))
        << d.log();
    EXPECT_TRUE(d.alive());
    child = std::stoi(*read_file(t.sub("pid")));
    ASSERT_EQ(kill(child, 0), 0);
    EXPECT_TRUE(
        wait_until([&] { return d.log().find("started\n") != std::string::npos; }, 5s, 10ms));
    int st = d.stop(5s);
    EXPECT_TRUE(WIFSIGNALED(st)) << describe_status(st);
    EXPECT_FALSE(d.alive());
  }
  // The grandchild was in the daemon's process group: it got SIGTERM too.
  EXPECT_TRUE(wait_until([&] { return kill(child, 0) != 0; }, 5s, 10ms));
}

TEST(DaemonTest, ReportsExitStatus) {
  TempDir t("bkp-daemon");
  Daemon d("false", {"/bin/sh", "-c", "exit 3"}, t.sub("log"));
  auto st = d.wait_exit(10s);
  ASSERT_TRUE(st);
  EXPECT_EQ(describe_status(*st), "exit 3");
  EXPECT_FALSE(d.alive());
}

TEST(DaemonTest, ExecFailureIsVisible) {
  TempDir t("bkp-daemon");
  Daemon d("nope", {"/nonexistent/binary"}, t.sub("log"));
  ASSERT_TRUE(d.wait_exit(10s));
  EXPECT_EQ(describe_status(*d.status()), "exit 127");
  EXPECT_NE(d.log().find("exec failed"), std::string::npos) << d.log();
}

TEST(DaemonTest, RestartAppendsToTheSameLog) {
  TempDir t("bkp-daemon");
  {
    Daemon d("echo", {"/bin/echo", "first"}, t.sub("log"));
    d.wait_exit(10s);
  }
  Daemon d("echo", {"/bin/echo", "second"}, t.sub("log"));
  d.wait_exit(10s);
  std::string log = d.log();
  EXPECT_NE(log.find("first"), std::string::npos);
  EXPECT_NE(log.find("second"), std::string::npos);
}

TEST(DaemonTest, EnvironmentAddsAndReplacesVariables) {
  TempDir t("bkp-daemon");
  ASSERT_EQ(setenv("BKP_DAEMON_TEST_KEPT", "kept", 1), 0);
  ASSERT_EQ(setenv("BKP_DAEMON_TEST_REPLACED", "old", 1), 0);
  Daemon d("sh",
           {"/bin/sh", "-c",
            "echo \"[$BKP_DAEMON_TEST_KEPT $BKP_DAEMON_TEST_REPLACED $BKP_DAEMON_TEST_ADDED]\"; "
            "env | grep -c '^BKP_DAEMON_TEST_REPLACED='"},
           t.sub("log"), {"BKP_DAEMON_TEST_REPLACED=new", "BKP_DAEMON_TEST_ADDED=added"});
  unsetenv("BKP_DAEMON_TEST_KEPT");
  unsetenv("BKP_DAEMON_TEST_REPLACED");
  ASSERT_TRUE(d.wait_exit(10s));
  EXPECT_NE(d.log().find("[kept new added]\n1\n"), std::string::npos) << d.log();
}

TEST(RunCommandTest, CapturesOutputAndStatus) {
  auto r = run_command({"/bin/sh", "-c", "echo out; echo err >&2; exit 2"});
  EXPECT_EQ(describe_status(r.status), "exit 2");
  EXPECT_NE(r.output.find("out"), std::string::npos);
  EXPECT_NE(r.output.find("err"), std::string::npos);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  EXPECT_EQ(r.exit_code(), 2);
  EXPECT_FALSE(r.timed_out);
}

TEST(RunCommandTest, ExitCodeOfAKilledCommandIsMinusOne) {
  auto r = run_command({"/bin/sh", "-c", "kill -9 $$"});
  EXPECT_EQ(r.exit_code(), -1);
}

TEST(RunCommandTest, KillsWhatOverstaysItsTimeout) {
  auto start = std::chrono::steady_clock::now();
  auto r = run_command({"/bin/sleep", "300"}, 200ms);
  EXPECT_TRUE(r.timed_out);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(WaitUntilTest, IsBounded) {
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(wait_until([] { return false; }, 100ms, 10ms));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 100ms);
  EXPECT_LT(took, 5s);
  int calls = 0;
  EXPECT_TRUE(wait_until([&] { return ++calls == 3; }, 10s, 1ms));
}

TEST(FilesTest, ReadsPortFiles) {
  TempDir t("bkp-files");
  std::string p = t.sub("port");
  EXPECT_EQ(read_port_file(p), std::nullopt);  // missing
  for (auto [text, want] :
       std::vector<std::pair<std::string, std::optional<uint16_t>>>{{"", std::nullopt},
                                                                    {"7700", 7700},
                                                                    {"7700\n", 7700},
                                                                    {"65535\n", 65535},
                                                                    {"0\n", std::nullopt},
                                                                    {"65536\n", std::nullopt},
                                                                    {"77x\n", std::nullopt},
                                                                    {"abc", std::nullopt}}) {
    write_file(p, text);
    EXPECT_EQ(read_port_file(p), want) << "'" << text << "'";
  }
}

TEST(FilesTest, ReadsStats) {
  TempDir t("bkp-files");
  write_file(t.sub("stats"), "wire_bytes 123\ndata_bytes 45\nops 6\nbatches 7\n");
  auto s = read_stats(t.sub("stats"));
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)["wire_bytes"], 123u);
  EXPECT_EQ((*s)["batches"], 7u);
  EXPECT_FALSE(read_stats(t.sub("missing")));
}

TEST(FilesTest, RandomBytesAreDeterministic) {
  EXPECT_EQ(random_bytes(1000, 1), random_bytes(1000, 1));
  EXPECT_NE(random_bytes(1000, 1), random_bytes(1000, 2));
  EXPECT_EQ(random_bytes(13, 5).size(), 13u);
}

class MountedFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = fuse_unavailable_reason()) GTEST_SKIP() << *why;
    dir_ = tmp_.mkdir("mnt");
    write_file(dir_ + "/underneath", "hidden while mounted");
  }
  MountOptions options(std::vector<std::string> args = {}) {
    return {BKP_HELLO_FS_PATH, dir_, std::move(args), tmp_.sub("fs.log")};
  }

  TempDir tmp_{"bkp-mountedfs"};
  std::string dir_;
};

TEST_F(MountedFsTest, MountsServesAndUnmountsCleanly) {
  auto fs = MountedFs::mount(options());
  ASSERT_TRUE(fs) << fs.error().message;
  EXPECT_TRUE(is_fuse_mounted(dir_));
  EXPECT_EQ(read_file(dir_ + "/hello"), "hello from bkp_hello_fs\n");
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/underneath"));
  EXPECT_EQ(mounts_under(tmp_.path()), std::vector<std::string>{dir_});

  auto st = (*fs)->unmount();
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(describe_status(*st), "exit 0");
  EXPECT_FALSE(is_fuse_mounted(dir_));
  EXPECT_EQ(read_file(dir_ + "/underneath"), "hidden while mounted");
}

TEST_F(MountedFsTest, DestructorUnmounts) {
  {
    auto fs = MountedFs::mount(options());
    ASSERT_TRUE(fs) << fs.error().message;
    ASSERT_TRUE(is_fuse_mounted(dir_));
  }
  EXPECT_FALSE(is_fuse_mounted(dir_));
}

TEST_F(MountedFsTest, CleansUpAfterADeadServer) {
  auto fs = MountedFs::mount(options({"--die-after-mount"}));
  ASSERT_TRUE(fs) << fs.error().message;
  ASSERT_TRUE((*fs)->process().wait_exit(10s)) << "the server was supposed to die";
  EXPECT_TRUE(is_fuse_mounted(dir_));  // a dead mount stays until someone unmounts it
  auto st = (*fs)->unmount();
  EXPECT_TRUE(st) << st.error().message;
  EXPECT_FALSE(is_fuse_mounted(dir_));
}

TEST_F(MountedFsTest, ReportsAServerThatNeverMounts) {
  MountOptions o = options();
  o.binary = "/bin/false";
  auto fs = MountedFs::mount(o);
  ASSERT_FALSE(fs);
  EXPECT_NE(fs.error().message.find("exited (exit 1) before mounting"), std::string::npos)
      << fs.error().message;
  EXPECT_FALSE(is_fuse_mounted(dir_));
}

TEST(MountInfoTest, SeesTheRootFilesystem) {
  bool root = false;
  for (const auto& m : read_mountinfo()) root = root || m.mount_point == "/";
  EXPECT_TRUE(root);
  EXPECT_FALSE(is_fuse_mounted("/"));
}

}  // namespace
}  // namespace bkp::testutil
