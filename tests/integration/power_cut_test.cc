// A restart of a replica's machine in the middle of a batch, played by a real replicator whose
// boot id a test seam sets (BKP_TEST_BOOT_ID) and a fake backupd that stops the stream at the
// frame the test means (fake_peers.h). Until 2026-12-02 the receiver's `position` was never
// flushed, so after a power cut it could claim operations of a batch whose effects the disk
// had lost (or the commit, with part of the next batch on disk), and the replica resumed past
// them: those bytes stayed missing. backupd's mirror runs the same stream::Receiver; the rules
// themselves are ReceiverTest's (tests/unit/stream_test.cc).
#include <signal.h>

#include <filesystem>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "tests/integration/cluster.h"
#include "tests/integration/fake_peers.h"
#include "tests/integration/workload.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/wait.h"

namespace bkp::it {
namespace {

using wire::OpKind;
using wire::Position;

constexpr uint64_t kInstance = 77;

class PowerCutTest : public ::testing::Test {
 protected:
  // Starts the replicator as if on boot `boot` of its machine, and accepts its connection.
  void start(const std::string& boot) {
    conn_.reset();
    log_ = tmp_.sub("replicator-" + std::to_string(++starts_) + ".log");
    replicator_ = std::make_unique<testutil::Daemon>(
        "replicator",
        std::vector<std::string>{Binaries::find().replicator, "--server",
                                 "127.0.0.1:" + std::to_string(backupd_.port()), "--server-id",
                                 backupd_.id(), "--root", root_, "--name", "r"},
        log_, std::vector<std::string>{"BKP_TEST_BOOT_ID=" + boot});
    conn_ = backupd_.accept();
    ASSERT_TRUE(conn_) << replicator_->log_tail();
  }
  void crash() {
    replicator_->signal(SIGKILL);
    ASSERT_TRUE(replicator_->wait_exit(10s));
  }
  // Waits until the replica's tree shows what the frames sent so far did.
  void wait_for_tree(const std::string& dir, const std::string& f) {
    ASSERT_TRUE(conn_->flush());
    EXPECT_TRUE(testutil::wait_until(
        [&] {
          return std::filesystem::exists(tree_ + "/" + dir) && slurp(tree_ + "/f") == f;
        },
        10s, 10ms))
        << replicator_->log_tail();
  }

  // A baseline of one file f (id 5) holding `data`, committed as `batch`.
  void baseline(StreamFrames& s, const std::string& data, uint64_t batch) {
    s.op(make(OpKind::kSyncBegin, ""));
    s.op(make(OpKind::kCreate, "f", "", 5));
    s.write(5, data);
    s.op(make(OpKind::kSyncEnd, ""));
    ASSERT_TRUE(s.commit(batch)) << replicator_->log_tail();
  }

  testutil::TempDir tmp_{"bkp-power-cut"};
  const std::string root_ = tmp_.mkdir("root");
  const std::string tree_ = root_ + "/h/app";
  FakeBackupd backupd_{tmp_.sub("backupd.pem")};
  std::unique_ptr<testutil::Daemon> replicator_;
  std::unique_ptr<net::Conn> conn_;
  std::string log_;
  int starts_ = 0;
};

TEST_F(PowerCutTest, AReplicaWhoseMachineRestartedInsideABatchAsksForABaseline) {
  start("boot 1");
  {
    StreamFrames s(*conn_);
    ASSERT_EQ(s.select("/app", kInstance).need_baseline, 1);
    ASSERT_NO_FATAL_FAILURE(baseline(s, "committed", 1));
    // Batch 2 is never committed: the replicator dies once its two frames are in the tree.
    s.op(make(OpKind::kMkdir, "d"));
    s.write(5, "uncommitted");
    wait_for_tree("d", "uncommitted");
  }
  crash();
  start("boot 1");  // a crash of the process alone: the page cache kept tree and record
  EXPECT_EQ(StreamFrames(*conn_).select("/app", kInstance), (Position{1, 0, 1}));
  crash();
  start("boot 2");  // the machine restarted too
  StreamFrames s(*conn_);
  EXPECT_EQ(s.select("/app", kInstance), (Position{1, 1, 0}));
  EXPECT_NE(slurp(log_).find("the machine restarted while this copy held changes"),
            std::string::npos)
      << slurp(log_);

  // The baseline it asked for, then part of batch 3 and a clean stop: a restart of the machine
  // after a clean stop resumes where the batch stood.
  ASSERT_NO_FATAL_FAILURE(baseline(s, "again", 2));
  s.op(make(OpKind::kMkdir, "e"));
  wait_for_tree("e", "again");
  replicator_->stop();
  start("boot 3");
  EXPECT_EQ(StreamFrames(*conn_).select("/app", kInstance), (Position{2, 0, 1}))
      << replicator_->log_tail();
}

}  // namespace
}  // namespace bkp::it
