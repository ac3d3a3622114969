// The Applier (applier.h): its record of source ctimes, the promise a reconcile trusts, so it must
// survive a restart and must be forgotten the moment the content it vouches for changes; holes
// and preallocations; its DataSource asking the kernel for a cold file's bytes ahead of a
// replica's read; a create's descriptor reused for the file's data and attributes; a copy
// (mirror or replica) that drops what it wrote from the page cache; a reservation the disk cannot spare; what
// it does without the capabilities a receiver running as its own user lacks (trusted.* xattrs,
// device nodes); file capabilities that its own writes and chowns would drop.
#include "common/changes/applier.h"

#include <gtest/gtest.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "common/changes/scan.h"
#include "common/stream/reconcile.h"
#include "tests/testutil/files.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/wait.h"
#include "tests/testutil/write_of.h"

namespace bkp::changes {
namespace {

using wire::Op;
using wire::OpKind;

class ApplierTest : public ::testing::Test {
 protected:
  std::unique_ptr<Applier> open() {
    auto a = Applier::open(dir_.path(), "tree", "ids");
    EXPECT_TRUE(a) << a.error().message;
    return a ? std::move(*a) : nullptr;
  }
  static void apply(Applier& a, const Op& op) {
    auto r = a.apply(op);
    ASSERT_TRUE(r) << r.error().message;
  }
  static Op create(const std::string& path, uint64_t id) {
    Op op;
    op.kind = OpKind::kCreate;
    op.path = path;
    op.id = id;
    op.mode = 0644;
    return op;
  }
  static Op attr(uint64_t id, int64_t ctime) {
    Op op;
    op.kind = OpKind::kAttr;
    op.id = id;
    op.mode = 0644;
    op.ctime_ns = ctime;
    return op;
  }
  static void write(Applier& a, uint64_t id, const std::string& data) {
    ASSERT_TRUE(a.write(testutil::write_of(id, 0, data)));
  }

  testutil::TempDir dir_{"bkp-applier"};
};

TEST_F(ApplierTest, ASourceCtimeSurvivesAReopenAndIsForgottenWhenTheContentChanges) {
  {
    auto a = open();
    apply(*a, create("f", 1));
    apply(*a, create("g", 2));
    apply(*a, create("h", 3));
    write(*a, 1, "one");
    apply(*a, attr(1, 111));
    apply(*a, attr(2, 222));
    apply(*a, attr(3, 333));
    EXPECT_EQ(a->source_ctime(1), 111);
    write(*a, 2, "changed after its Attr");  // the ctime no longer vouches for it
    Op shrink;
    shrink.kind = OpKind::kTruncate;
    shrink.id = 3;
    apply(*a, shrink);
    EXPECT_EQ(a->source_ctime(2), 0);
    EXPECT_EQ(a->source_ctime(3), 0);
    ASSERT_TRUE(a->commit());
  }
  auto a = open();  // as after a restart
  EXPECT_EQ(a->source_ctime(1), 111);
  EXPECT_EQ(a->source_ctime(2), 0);
  EXPECT_EQ(a->source_ctime(3), 0);
  Op gone;
  gone.kind = OpKind::kUnlink;
  gone.path = "f";
  apply(*a, gone);
  EXPECT_EQ(a->source_ctime(1), 0) << "a removed file keeps no ctime";
  apply(*a, create("f2", 1));
  EXPECT_EQ(a->source_ctime(1), 0);
}

// A crash in the middle of an append leaves a torn record; the next open cuts it off and the
// records after it still count.
TEST_F(ApplierTest, ATornCtimeRecordIsCutOff) {
  {
    auto a = open();
    apply(*a, create("f", 1));
    apply(*a, attr(1, 111));
  }
  {
    std::ofstream torn(dir_.sub("ids/ctimes"), std::ios::app | std::ios::binary);
    torn.write("\x01\x02\x03", 3);
  }
  {
    auto a = open();
    EXPECT_EQ(a->source_ctime(1), 111);
    apply(*a, create("g", 2));
    apply(*a, attr(2, 222));
  }
  auto a = open();
  EXPECT_EQ(a->source_ctime(1), 111);
  EXPECT_EQ(a->source_ctime(2), 222) << "a record appended after the torn one was misread";
}

TEST_F(ApplierTest, APunchMakesAHoleAndForgetsTheCtime) {
  auto a = open();
  apply(*a, create("f", 1));
  write(*a, 1, std::string(256 * 1024, 'x'));
  apply(*a, attr(1, 5));
  Op punch;
  punch.kind = OpKind::kPunch;
  punch.id = 1;
  punch.offset = 64 * 1024;
  punch.size = 128 * 1024;
  apply(*a, punch);
  EXPECT_EQ(a->source_ctime(1), 0);
  auto fd = a->open_id(1);
  ASSERT_TRUE(fd);
  EXPECT_EQ(lseek(fd->get(), 0, SEEK_HOLE), 64 * 1024);
  EXPECT_EQ(lseek(fd->get(), 64 * 1024, SEEK_DATA), 192 * 1024);
  char c = 0;
  ASSERT_EQ(pread(fd->get(), &c, 1, 100 * 1024), 1);
  EXPECT_EQ(c, 0);
}

// The kernel drops a file capability at every write and chown, even root's, and a batch sends
// operations before data and closes each file with its attributes (a chown on a baseline), so a
// capability the receiver applied would be gone by the commit. It must stay until the source
// removes it (its own kRemoveXattr), also across batches (a large file's data spans several).
TEST_F(ApplierTest, AFileCapabilitySurvivesTheDataAndTheChownAfterIt) {
  const std::string cap = std::string("\x01\x00\x00\x02\x00\x04\x00\x00", 8) + std::string(12, '\0');
  auto has_capability = [&](Applier& a) -> std::string {
    auto fd = a.open_id(1);
    if (!fd) return "no file";
    char value[64];
    ssize_t n = fgetxattr(fd->get(), "security.capability", value, sizeof value);
    return n < 0 ? std::strerror(errno) : std::string(value, static_cast<size_t>(n)) == cap ? "yes" : "other";
  };
  auto a = open();
  apply(*a, create("f", 1));
  Op set{.kind = OpKind::kSetXattr, .id = 1, .name = "security.capability", .value = cap};
  apply(*a, set);
  write(*a, 1, "data written after the capability");
  Op owner = attr(1, 0);
  owner.uid = 65534;
  owner.gid = 65534;
  apply(*a, owner);
  ASSERT_TRUE(a->commit());
  EXPECT_EQ(has_capability(*a), "yes") << "after the batch's data and chown";

  write(*a, 1, "the next batch writes again");  // a later part of the same file
  ASSERT_TRUE(a->commit());
  EXPECT_EQ(has_capability(*a), "yes") << "after a later batch's data";

  Op remove{.kind = OpKind::kRemoveXattr, .id = 1, .name = "security.capability"};
  apply(*a, remove);
  write(*a, 1, "written after the source removed it");
  ASSERT_TRUE(a->commit());
  EXPECT_EQ(has_capability(*a), std::strerror(ENODATA)) << "the source's removal holds";
}

// A replica's baseline reads the mirror, cold after a restart: the source asks the kernel for
// the next files' bytes before they are read (Prefetcher, shipper.cc), and backupd's mirror
// source does it by id. A file dropped from the cache comes back without anyone reading it.
TEST_F(ApplierTest, TheMirrorSourcePrefetchesAColdFileById) {
  constexpr size_t kSize = 1 << 20;
  auto a = open();
  apply(*a, create("cold", 1));
  write(*a, 1, std::string(kSize, 'c'));
  ASSERT_TRUE(a->commit());  // written back: its pages are clean and can be dropped
  auto fd = a->open_id(1);
  ASSERT_TRUE(fd) << fd.error().message;
  ASSERT_EQ(posix_fadvise(fd->get(), 0, kSize, POSIX_FADV_DONTNEED), 0);
  if (testutil::cached_pages(fd->get(), kSize) != 0) {
    GTEST_SKIP() << "this filesystem keeps the pages (a tmpfs): nothing to prefetch";
  }
  ApplierSource source(*a);
  source.prefetch(FileRef{1, ""}, 0, kSize);
  source.prefetch(FileRef{2, ""}, 0, kSize);  // no such id: nothing happens
  // The kernel's readahead is best effort: under load it has left out a page (255 of 256), so
  // "the whole file was asked for" is checked as at least nine tenths of it coming back.
  const size_t pages = kSize / static_cast<size_t>(sysconf(_SC_PAGESIZE));
  EXPECT_TRUE(testutil::wait_until(
      [&] { return testutil::cached_pages(fd->get(), kSize) * 10 >= pages * 9; },
      std::chrono::seconds(10), std::chrono::milliseconds(20)))
      << testutil::cached_pages(fd->get(), kSize) << " of " << pages << " pages read ahead";
}

// A create keeps its descriptor for the file's data and attributes in the same batch. Names
// that change in between must not lead those to the wrong inode: the data of a renamed file
// follows it, and once a file is gone, a new file of the same id gets its own descriptor.
TEST_F(ApplierTest, DataAndAttrsAfterACreateReachTheFileTheIdNamesNow) {
  auto a = open();
  apply(*a, create("a", 1));
  apply(*a, Op{.kind = OpKind::kRename, .path = "a", .target = "moved"});
  write(*a, 1, "follows the rename");
  apply(*a, create("b", 2));
  apply(*a, Op{.kind = OpKind::kUnlink, .path = "b"});
  apply(*a, create("b", 2));  // the same id, a new file
  write(*a, 2, "the new b");
  Op mode = attr(2, 222);
  mode.mode = 0640;
  apply(*a, mode);
  ASSERT_TRUE(a->commit());
  const std::string tree = dir_.sub("tree");
  EXPECT_EQ(testutil::read_file(tree + "/moved").value_or("(none)"), "follows the rename");
  EXPECT_EQ(testutil::read_file(tree + "/b").value_or("(none)"), "the new b");
  struct stat st{};
  ASSERT_EQ(stat((tree + "/b").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(a->source_ctime(2), 222);
  EXPECT_FALSE(std::filesystem::exists(tree + "/a"));
}

// A copy (mirror or replica) keeps only the last few MiB of a long sequential run in the page
// cache: the rest is written back and dropped while the run goes on, so the receiver recycles
// its pages instead of growing the cache by every byte it receives. What it wrote is all there,
// and a write elsewhere in the file starts a run of its own.
TEST_F(ApplierTest, ACopyDropsTheBackOfALongWriteRunFromThePageCache) {
  constexpr size_t kMiB = 1 << 20, kRun = 48 * kMiB;
  auto opened = Applier::open(dir_.path(), "copy", "copy-ids");
  ASSERT_TRUE(opened) << opened.error().message;
  Applier& a = **opened;
  apply(a, create("big", 1));
  auto piece = [](size_t mib) { return std::string(kMiB, static_cast<char>('a' + mib % 26)); };
  ASSERT_TRUE(a.write(testutil::write_of(1, kRun + 8 * kMiB, piece(99))));  // a run of its own
  for (size_t mib = 0; mib < kRun / kMiB; ++mib) {
    ASSERT_TRUE(a.write(testutil::write_of(1, mib * kMiB, piece(mib))));
  }
  auto fd = a.open_id(1);
  ASSERT_TRUE(fd) << fd.error().message;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t cached = testutil::cached_pages(fd->get(), kRun + 9 * kMiB) * page;
  struct statfs fs{};
  ASSERT_EQ(statfs(dir_.path().c_str(), &fs), 0);
  if (fs.f_type == TMPFS_MAGIC) {
    GTEST_SKIP() << "a tmpfs keeps every page: nothing to drop";
  }
  // The run keeps between one and two lags (8 MiB each) behind its end; the lone piece stays.
  EXPECT_LE(cached, 17 * kMiB) << "bytes of the file still in the page cache";
  ASSERT_TRUE(a.commit());
  std::string got(kMiB, '\0');
  for (size_t mib = 0; mib < kRun / kMiB; ++mib) {
    ASSERT_EQ(pread(fd->get(), got.data(), kMiB, static_cast<off_t>(mib * kMiB)),
              static_cast<ssize_t>(kMiB));
    ASSERT_EQ(got, piece(mib)) << "MiB " << mib;
  }
  ASSERT_EQ(pread(fd->get(), got.data(), kMiB, static_cast<off_t>(kRun + 8 * kMiB)),
            static_cast<ssize_t>(kMiB));
  EXPECT_EQ(got, piece(99));
}

// A stream's rename, link or symlink replaces a stale entry this side still holds at the new
// name (the fallback after EEXIST). Where the kernel would refuse the operation itself only
// after EEXIST — a rename onto its own name or into its own subtree, a hard link to a
// directory, a symlink target too long — that fallback removed the entry and then failed.
// Found by tests/fuzz/log_stream.cc: the source lost a symlink renamed onto itself with
// RENAME_NOREPLACE, and a directory a link to another directory was tried over, while the
// receiver kept both.
TEST_F(ApplierTest, RenamesAndLinksThatCannotHappenRemoveNothing) {
  auto a = open();
  ASSERT_TRUE(a);
  Op sym;
  sym.kind = OpKind::kSymlink;
  sym.path = "s";
  sym.target = "somewhere";
  apply(*a, sym);
  Op dir;
  dir.kind = OpKind::kMkdir;
  dir.mode = 0755;
  for (const char* p : {"d", "d/e"}) {
    dir.path = p;
    apply(*a, dir);
  }
  for (unsigned flags : {0u, unsigned{RENAME_NOREPLACE}, unsigned{RENAME_EXCHANGE}}) {
    for (const char* p : {"s", "d"}) {
      Op self;
      self.kind = OpKind::kRename;
      self.path = self.target = p;
      self.flags = flags;
      apply(*a, self);
    }
    Op into;
    into.kind = OpKind::kRename;
    into.path = "d";
    into.target = "d/e";
    into.flags = flags;
    auto r = a->apply(into);
    ASSERT_FALSE(r) << "renamed a directory into itself, flags " << flags;
    EXPECT_EQ(r.error().code, EINVAL);
  }
  Op link;
  link.kind = OpKind::kLink;
  link.path = "d/e";
  link.target = "d";
  auto linked = a->apply(link);
  ASSERT_FALSE(linked) << "hard-linked a directory";
  EXPECT_EQ(linked.error().code, EPERM);
  Op long_link = sym;
  long_link.target = std::string(PATH_MAX, 'x');
  auto too_long = a->apply(long_link);
  ASSERT_FALSE(too_long) << "made a symlink whose target is too long";
  EXPECT_EQ(too_long.error().code, ENAMETOOLONG);

  const std::string tree = dir_.sub("tree");
  struct stat st{};
  EXPECT_EQ(lstat((tree + "/s").c_str(), &st), 0) << "the symlink renamed onto itself is gone";
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(lstat((tree + "/d/e").c_str(), &st), 0) << "the directory renamed or linked into is gone";
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

// kAllocate does what fallocate did on the source: a preallocation grows the size (or, with
// KEEP_SIZE, only the allocation) and a zero range turns data into allocated zeros; neither
// leaves a hole, and bad flags are refused before anything changes.
TEST_F(ApplierTest, AllocateOpsPreallocateAndZeroRangesWithoutHoles) {
  auto a = open();
  apply(*a, create("f", 1));
  write(*a, 1, std::string(256 * 1024, 'x'));
  auto op = [](uint32_t flags, uint64_t offset, uint64_t size) {
    return Op{.kind = OpKind::kAllocate, .id = 1, .flags = flags, .size = size, .offset = offset};
  };
  apply(*a, op(wire::kAllocateZeroRange | wire::kAllocateKeepSize, 64 * 1024, 64 * 1024));
  apply(*a, op(0, 256 * 1024, 768 * 1024));                          // grows to 1 MiB
  apply(*a, op(wire::kAllocateKeepSize, 1024 * 1024, 1024 * 1024));  // past the end
  auto fd = a->open_id(1);
  ASSERT_TRUE(fd);
  struct stat st;
  ASSERT_EQ(fstat(fd->get(), &st), 0);
  EXPECT_EQ(st.st_size, 1024 * 1024);
  EXPECT_GE(st.st_blocks * 512, 2 * 1024 * 1024) << "the preallocations are not allocated";
  std::string got(256 * 1024, '\0');
  ASSERT_EQ(pread(fd->get(), got.data(), got.size(), 0), static_cast<ssize_t>(got.size()));
  EXPECT_EQ(got, std::string(64 * 1024, 'x') + std::string(64 * 1024, '\0') +
                     std::string(128 * 1024, 'x'));
  EXPECT_FALSE(a->apply(op(0x02, 0, 4096))) << "an unknown flag (punch's) must be refused";
  EXPECT_FALSE(a->apply(op(0, 0, 0))) << "an empty range must be refused";
}

// A reservation the receiver's disk cannot spare (64 MiB on an 8 MiB tmpfs: a node preallocating
// more than backupd has, or a hostile one) failed with ENOSPC and left the stream stuck on it,
// with the disk full for every other volume. Now it is applied as the zeros it reads as (a hole
// and the new size) and the disk keeps its room; one that fits is still reserved.
TEST_F(ApplierTest, AReservationTheDiskCannotSpareKeepsTheContentButNotTheSpace) {
  const std::string small = dir_.mkdir("small");
  if (::mount("tmpfs", small.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=8m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs at " << small << ": " << std::strerror(errno);
  }
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{small};
  auto a = Applier::open(small, "tree", "ids");
  ASSERT_TRUE(a) << a.error().message;
  apply(**a, create("f", 1));
  write(**a, 1, std::string(64 * 1024, 'x'));
  auto op = [](uint32_t flags, uint64_t offset, uint64_t size) {
    return Op{.kind = OpKind::kAllocate, .id = 1, .flags = flags, .size = size, .offset = offset};
  };
  auto file = (*a)->open_id(1);
  ASSERT_TRUE(file);
  auto allocated = [&] {
    struct stat st {};
    EXPECT_EQ(fstat(file->get(), &st), 0);
    return static_cast<uint64_t>(st.st_blocks) * 512;
  };
  auto head = [&] {
    std::string got(64 * 1024, '?');
    EXPECT_EQ(pread(file->get(), got.data(), got.size(), 0), static_cast<ssize_t>(got.size()));
    return got;
  };

  apply(**a, op(0, 64 * 1024, 64 * 1024 * 1024));
  struct stat st {};
  ASSERT_EQ(fstat(file->get(), &st), 0);
  EXPECT_EQ(st.st_size, 64 * 1024 + 64 * 1024 * 1024);
  EXPECT_LT(allocated(), 1024u * 1024) << "the preallocation was reserved";
  EXPECT_EQ(head(), std::string(64 * 1024, 'x'));

  apply(**a, op(wire::kAllocateZeroRange | wire::kAllocateKeepSize, 0, 32 * 1024 * 1024));
  EXPECT_EQ(head(), std::string(64 * 1024, '\0')) << "the zero range is not zeros";
  EXPECT_LT(allocated(), 64u * 1024) << "the zero range was reserved";

  apply(**a, op(wire::kAllocateKeepSize, 0, 1024 * 1024));
  EXPECT_GE(allocated(), 1024u * 1024) << "a reservation that fits was not made";
}

// Runs fn in a child process whose effective capabilities lack cap; the child's exit status:
// fn's result, or 100 / 101 when capget / capset failed.
int without_capability(int cap, const std::function<int()>& fn) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (syscall(SYS_capget, &header, data) != 0) _exit(100);
    data[cap / 32].effective &= ~(1u << (cap % 32));
    if (syscall(SYS_capset, &header, data) != 0) _exit(101);
    _exit(fn());
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

// Without CAP_SYS_ADMIN (a receiver running as its own user) a trusted.* attribute cannot be
// set: it is skipped, not an error that would stop the stream. Checked in a child process that
// drops the capability.
TEST_F(ApplierTest, ATrustedXattrIsSkippedWithoutCapSysAdmin) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop CAP_SYS_ADMIN alone";
  auto a = open();
  apply(*a, create("f", 1));
  Op set{.kind = OpKind::kSetXattr, .path = "f", .id = 1, .name = "trusted.t", .value = "v"};
  EXPECT_EQ(without_capability(CAP_SYS_ADMIN, [&] { return a->apply(set) ? 0 : 1; }), 0)
      << "1: the apply failed; 100, 101: capget/capset failed";
  auto fd = a->open_id(1);
  ASSERT_TRUE(fd);
  char buf[8];
  EXPECT_LT(fgetxattr(fd->get(), "trusted.t", buf, sizeof buf), 0) << "set without the capability?";
}

// Without CAP_MKNOD (backupd's unit: PrivateDevices=) a device node becomes a placeholder
// (device_placeholders.h): an empty file that every reader of the tree sees as the node, after
// a reopen too, through links, replays, removals, renames over it and a baseline's prune, and
// whose index entry goes with its last name. The child applies without the capability; this
// process checks with a fresh Applier, as backupd after a restart.
TEST_F(ApplierTest, ADeviceNodeWithoutCapMknodIsAPlaceholderReadAsTheNode) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop CAP_MKNOD alone";
  auto node = [](const std::string& path, mode_t mode, dev_t rdev) {
    return Op{.kind = OpKind::kMknod, .path = path, .mode = mode, .uid = 65534, .gid = 65534,
              .rdev = rdev};
  };
  {
    auto a = open();
    ASSERT_TRUE(a);
    int step = without_capability(CAP_MKNOD, [&] {
      const std::vector<Op> ops{
          node("null", S_IFCHR | 0620, makedev(1, 3)),
          node("loop", S_IFBLK | 0600, makedev(7, 0)),
          Op{.kind = OpKind::kLink, .path = "null2", .target = "null"},
          node("null", S_IFCHR | 0620, makedev(1, 3)),  // a replay: the name is taken
          Op{.kind = OpKind::kLink, .path = "null2", .target = "null"},
          node("gone", S_IFCHR | 0600, makedev(1, 5)),
          Op{.kind = OpKind::kUnlink, .path = "gone"},
          node("over", S_IFCHR | 0600, makedev(1, 7)),
          node("tmp", S_IFCHR | 0640, makedev(1, 8)),
          Op{.kind = OpKind::kRename, .path = "tmp", .target = "over"},
          node("fifo", S_IFIFO | 0600, 0),  // needs no capability: a real fifo
      };
      for (size_t i = 0; i < ops.size(); ++i) {
        if (!a->apply(ops[i])) return static_cast<int>(i + 1);
      }
      return 0;
    });
    ASSERT_EQ(step, 0) << "the operation that failed (1-based); 100, 101: capget/capset failed";
    apply(*a, create("plain", 9));  // an empty regular file like a placeholder, but a file
  }
  const std::string tree = dir_.path() + "/tree", devices = dir_.path() + "/ids/devices";
  struct stat raw{};
  ASSERT_EQ(lstat((tree + "/null").c_str(), &raw), 0);
  EXPECT_TRUE(S_ISREG(raw.st_mode)) << "a real device node: was CAP_MKNOD dropped?";
  auto a = open();
  ASSERT_TRUE(a);
  auto seen = [&](const std::string& name) {
    struct stat st{};
    EXPECT_EQ(lstat((tree + "/" + name).c_str(), &st), 0) << name;
    a->placeholders().as_source(st);
    return st;
  };
  struct stat null = seen("null");
  EXPECT_TRUE(S_ISCHR(null.st_mode));
  EXPECT_EQ(null.st_mode & 07777, 0620u);
  EXPECT_EQ(null.st_rdev, makedev(1, 3));
  EXPECT_EQ(null.st_uid, 65534u);
  EXPECT_EQ(null.st_nlink, 2u) << "null and null2, not the index link";
  EXPECT_EQ(seen("null2").st_ino, null.st_ino);
  EXPECT_TRUE(S_ISBLK(seen("loop").st_mode));
  EXPECT_EQ(seen("loop").st_rdev, makedev(7, 0));
  EXPECT_EQ(seen("over").st_rdev, makedev(1, 8)) << "renamed over the old node";
  EXPECT_EQ(seen("over").st_mode & 07777, 0640u);
  EXPECT_TRUE(S_ISFIFO(seen("fifo").st_mode));
  EXPECT_TRUE(S_ISREG(seen("plain").st_mode));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(devices), {}), 3)
      << "null, loop and over: the index entries of gone and the old over went with them";

  auto manifest = stream::walk_manifest(a->tree_fd(), 0, &a->placeholders());
  ASSERT_TRUE(manifest) << manifest.error().message;
  EXPECT_TRUE(S_ISCHR(manifest->at("null2").mode));
  EXPECT_EQ(manifest->at("loop").rdev, makedev(7, 0));
  ScanOptions options;
  options.placeholders = &a->placeholders();
  auto batch = scan_tree(a->tree_fd(), [](int, const char*, const struct stat&) {
    return std::optional<FileRef>(FileRef{9, ""});
  }, options);
  ASSERT_TRUE(batch) << batch.error().message;
  size_t device_nodes = 0, links = 0;
  for (const Op& op : batch->ops) {
    if (op.kind == OpKind::kMknod && (S_ISCHR(op.mode) || S_ISBLK(op.mode))) ++device_nodes;
    if (op.kind == OpKind::kLink) ++links;
  }
  EXPECT_EQ(device_nodes, 3u) << "null, loop, over";
  EXPECT_EQ(links, 1u) << "null2";

  // A baseline that names only null prunes the rest, index entries too.
  apply(*a, Op{.kind = OpKind::kSyncBegin});
  apply(*a, Op{.kind = OpKind::kAttr, .path = "null", .mode = 0620, .uid = 65534, .gid = 65534});
  apply(*a, Op{.kind = OpKind::kSyncEnd});
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(devices), {}), 1);
  EXPECT_TRUE(S_ISCHR(seen("null").st_mode));
  EXPECT_EQ(seen("null").st_nlink, 1u);
}

}  // namespace
}  // namespace bkp::changes
