// SourceActivity (fs/source_activity.h) across restarts of the worker and of the machine (the
// boot id's test seam, BKP_TEST_BOOT_ID): which files a reconcile must compare by content.
#include "fs/source_activity.h"

#include <fcntl.h>
#include <stdlib.h>

#include <string>

#include <gtest/gtest.h>

#include "tests/testutil/temp_dir.h"

namespace bkp::fs {
namespace {

class SourceActivityTest : public ::testing::Test {
 protected:
  SourceActivityTest() {
    ::setenv("BKP_TEST_BOOT_ID", "boot 1", 1);
    reopen();
  }
  ~SourceActivityTest() override { ::unsetenv("BKP_TEST_BOOT_ID"); }

  // The worker ends without a clean stop (the record stays as it is) and a new one starts.
  void reopen() {
    activity_.reset();
    auto a = SourceActivity::open(dir_.sub("activity"), root_.get(), std::chrono::milliseconds(0));
    ASSERT_TRUE(a) << a.error().message;
    activity_ = std::move(*a);
  }
  void restart_machine(const std::string& boot) {
    ::setenv("BKP_TEST_BOOT_ID", boot.c_str(), 1);
    reopen();
  }
  static changes::Batch batch_of(std::initializer_list<uint64_t> ids) {
    changes::Batch b;
    for (uint64_t id : ids) {
      changes::FileChange f;
      f.ref.id = id;
      f.extents.add(0, 4096);
      b.files.push_back(std::move(f));
    }
    return b;
  }
  void ship(std::initializer_list<uint64_t> ids) {
    changes::Batch b = batch_of(ids);
    ASSERT_TRUE(activity_->reading(b));
    activity_->read_done(b);
  }

  testutil::TempDir dir_{"bkp-activity"};
  UniqueFd root_{::open(dir_.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  std::unique_ptr<SourceActivity> activity_;
};

TEST_F(SourceActivityTest, FilesShippedBeforeARestartOfTheMachineAreSuspectUntilReconciled) {
  ship({1, 2});
  reopen();  // a worker restart: the page cache kept what was shipped
  EXPECT_EQ(activity_->suspects(), 0u);
  EXPECT_EQ(activity_->listed(), 2u) << "still listed until a settle syncs the source";
  ship({3});
  restart_machine("boot 2");
  EXPECT_EQ(activity_->suspects(), 3u);
  EXPECT_TRUE(activity_->suspect(1));
  EXPECT_TRUE(activity_->suspect(3));
  EXPECT_FALSE(activity_->suspect(4));
  reopen();  // again before the reconcile: they are still in doubt
  EXPECT_EQ(activity_->suspects(), 3u);
  ASSERT_TRUE(activity_->clear_suspects());
  reopen();
  EXPECT_EQ(activity_->suspects(), 0u);
  restart_machine("boot 3");
  EXPECT_EQ(activity_->suspects(), 0u) << "nothing was shipped in boot 2";
}

TEST_F(SourceActivityTest, ASettleDropsOnlyWhatWasReadBeforeItsSync) {
  ship({1});
  changes::Batch in_flight = batch_of({2});
  ASSERT_TRUE(activity_->reading(in_flight));
  ASSERT_TRUE(activity_->settle());
  EXPECT_EQ(activity_->listed(), 1u) << "file 2 is still being read";
  activity_->read_done(in_flight);
  ship({2});  // listed again, read after the settle began
  restart_machine("boot 2");
  EXPECT_FALSE(activity_->suspect(1));
  EXPECT_TRUE(activity_->suspect(2));
  ASSERT_TRUE(activity_->clear_suspects());
  ship({5});
  ASSERT_TRUE(activity_->settle());
  EXPECT_EQ(activity_->listed(), 0u);
  restart_machine("boot 3");
  EXPECT_EQ(activity_->suspects(), 0u);
}

TEST_F(SourceActivityTest, AFileWhoseDataIsNotReadIsNotListed) {
  changes::Batch attrs_only;
  attrs_only.files.emplace_back().ref.id = 9;  // a chmod: no extents, nothing read
  ASSERT_TRUE(activity_->reading(attrs_only));
  activity_->read_done(attrs_only);
  EXPECT_EQ(activity_->listed(), 0u);
}

TEST_F(SourceActivityTest, ACleanStopLeavesNothingInDoubt) {
  ship({1, 2});
  ASSERT_TRUE(activity_->close());
  restart_machine("boot 2");
  EXPECT_EQ(activity_->suspects(), 0u);
  EXPECT_EQ(activity_->listed(), 0u);
}

}  // namespace
}  // namespace bkp::fs
