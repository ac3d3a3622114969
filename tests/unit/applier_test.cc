// Applier's record of source ctimes (applier.h): the promise a reconcile trusts, so it must
// survive a restart and must be forgotten the moment the content it vouches for changes.
#include "common/changes/applier.h"

#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "tests/testutil/temp_dir.h"
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

// Without CAP_SYS_ADMIN (a receiver running as its own user) a trusted.* attribute cannot be
// set: it is skipped, not an error that would stop the stream. Checked in a child process that
// drops the capability.
TEST_F(ApplierTest, ATrustedXattrIsSkippedWithoutCapSysAdmin) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop CAP_SYS_ADMIN alone";
  auto a = open();
  apply(*a, create("f", 1));
  Op set{.kind = OpKind::kSetXattr, .path = "f", .id = 1, .name = "trusted.t", .value = "v"};
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (syscall(SYS_capget, &header, data) != 0) _exit(2);
    data[0].effective &= ~(1u << CAP_SYS_ADMIN);
    if (syscall(SYS_capset, &header, data) != 0) _exit(3);
    _exit(a->apply(set) ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the apply failed; 2, 3: capget/capset failed";
  auto fd = a->open_id(1);
  ASSERT_TRUE(fd);
  char buf[8];
  EXPECT_LT(fgetxattr(fd->get(), "trusted.t", buf, sizeof buf), 0) << "set without the capability?";
}

}  // namespace
}  // namespace bkp::changes
