// A run's changed counts now that ingest goes on during its archive (Volume::begin_run_counts):
// the run reports what was applied up to its cut; a run that succeeds leaves the next one
// exactly what was applied after the cut (a file touched on both sides of the cut counts for
// both runs); a run that fails leaves everything since the last success, as if it never cut.
#include <gtest/gtest.h>

#include "server/volume.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::server {
namespace {

class RunCountsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto v = Volume::open("web1", "/srv/app", dir_.path());
    ASSERT_TRUE(v) << v.error().message;
    volume_ = std::move(*v);
  }
  std::pair<uint64_t, uint64_t> counts() const {
    return {volume_->state.run_bytes, volume_->state.run_files};
  }

  testutil::TempDir dir_{"bkp-counts"};
  std::shared_ptr<Volume> volume_;
};

TEST_F(RunCountsTest, ASucceededRunLeavesTheNextWhatCameAfterItsCut) {
  volume_->count_write(1, 100);
  volume_->count_write(2, 10);
  EXPECT_EQ(volume_->begin_run_counts(), (std::pair<uint64_t, uint64_t>{110, 2}));
  volume_->count_write(2, 5);  // touched before the cut too
  volume_->count_write(3, 7);
  EXPECT_EQ(counts(), (std::pair<uint64_t, uint64_t>{122, 3})) << "everything, until the run ends";
  volume_->end_run_counts(Volume::RunEnd::kSucceeded);
  EXPECT_EQ(counts(), (std::pair<uint64_t, uint64_t>{12, 2}));
  volume_->count_write(3, 1);  // already counted for this run
  EXPECT_EQ(counts(), (std::pair<uint64_t, uint64_t>{13, 2}));
}

TEST_F(RunCountsTest, AFailedRunHandsEverythingOn) {
  volume_->count_write(1, 100);
  volume_->begin_run_counts();
  volume_->count_write(2, 5);
  volume_->end_run_counts(Volume::RunEnd::kFailed);
  EXPECT_EQ(counts(), (std::pair<uint64_t, uint64_t>{105, 2}));
  volume_->count_write(1, 1);  // already counted since the last success
  EXPECT_EQ(counts(), (std::pair<uint64_t, uint64_t>{106, 2}));
}

}  // namespace
}  // namespace bkp::server
