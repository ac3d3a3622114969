// Applier's record of source ctimes (applier.h): the promise a reconcile trusts, so it must
// survive a restart and must be forgotten the moment the content it vouches for changes.
#include "common/changes/applier.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace bkp::changes
