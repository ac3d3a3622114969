// stream::Sender and stream::Receiver over a socketpair, with the connection cut after every
// frame of a namespace-heavy batch (rename then re-create the same name, rename chains, rm -rf
// then re-create, a hard link to a symlink, xattrs, truncates): the receiver's tree must equal
// the sender's every time — with the receiver kept alive across the cut, and with it "killed"
// (its Applier and Receiver reopened from disk). The source side is itself an Applier-built
// tree recording into a ChangeLog, as backupd's mirror feeds a replica stream; like backupfs, it
// records each changed directory's attributes after every namespace operation.
//
// ReconcileTest: a sender that restarted (a new stream instance) against a receiver that holds
// an older copy of its plain-directory tree: the reconcile (stream/reconcile.h) must make the
// copy exact while shipping only the bytes that differ.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/changes/applier.h"
#include "common/changes/change_log.h"
#include "common/net/conn.h"
#include "common/net/messenger.h"
#include "common/path.h"
#include "common/stream/receiver.h"
#include "common/stream/reconcile.h"
#include "common/stream/sender.h"
#include "tests/testutil/files.h"
#include "tests/testutil/stream_ends.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/write_of.h"
#include "tests/testutil/tree_compare.h"

namespace bkp::stream {
namespace {

using wire::Op;
using wire::OpKind;

constexpr uint64_t kInstance = 0xabcdef;
constexpr int kTimeoutMs = 10000;

Op op(OpKind kind, std::string path, std::string target = "", uint64_t id = 0) {
  Op o;
  o.kind = kind;
  o.path = std::move(path);
  o.target = std::move(target);
  o.id = id;
  o.mode = kind == OpKind::kMkdir ? 0755 : 0644;
  return o;
}

// The sending side: a tree built by an Applier, whose every change is also recorded in a log.
class Source {
 public:
  explicit Source(const testutil::TempDir& dir)
      : tree_(std::move(*testutil::LoggedTree::open(dir.path()))) {}

  void apply(const Op& o) {
    auto r = tree_->apply(o);
    ASSERT_TRUE(r) << r.error().message;
  }
  void write(uint64_t id, uint64_t offset, const std::string& data) {
    auto r = tree_->write(id, offset, data);
    ASSERT_TRUE(r) << r.error().message;
  }

  changes::ChangeLog& log() { return tree_->log(); }
  changes::Applier& applier() { return tree_->applier(); }

 private:
  std::unique_ptr<testutil::LoggedTree> tree_;
};

enum class Cut { kLinkOnly, kReceiverRestarts };

// Sends everything in the source's log; the first connection is cut after `cut_after` frames.
// Returns how many connections it took (1: the cut came after the last frame).
// A receiver asks for a baseline only when it first meets the stream (the source's log then
// holds everything since the empty tree, which is one).
int deliver(Source& src, testutil::Sink& sink, Sender& sender, uint64_t cut_after, Cut cut,
            bool first_contact = false) {
  changes::ApplierSource data(src.applier());
  changes::ShipCounters counters;
  auto connections = testutil::deliver(
      sink, {.sender = sender,
             .log = src.log(),
             .data = data,
             .counters = counters,
             .instance = kInstance,
             .on_baseline = first_contact ? testutil::OnBaseline::kSendLog
                                          : testutil::OnBaseline::kRefuse,
             .cut_after = cut_after,
             .restart_after_cut = cut == Cut::kReceiverRestarts,
             .timeout_ms = kTimeoutMs});
  if (!connections) ADD_FAILURE() << connections.error().message;
  return connections.value_or(0);
}

// The receiving side of StreamTest and ReconcileTest: dir/dst, its ids in dir/dst-ids.
std::unique_ptr<testutil::Sink> open_sink(const testutil::TempDir& dir) {
  auto sink = testutil::Sink::open(dir.path(), "dst", "dst-ids");
  EXPECT_TRUE(sink) << sink.error().message;
  return sink ? std::move(*sink) : nullptr;
}

class StreamTest : public ::testing::Test {
 protected:
  // Committed before the cut batch, so its data is not in the batch a replay would resend.
  void first_batch(Source& src) {
    src.apply(op(OpKind::kCreate, "x", "", 1));
    src.write(1, 0, "first x");
    src.apply(op(OpKind::kMkdir, "tree"));
    src.apply(op(OpKind::kCreate, "tree/a", "", 3));
    src.write(3, 0, std::string(300000, 'a'));
    src.apply(op(OpKind::kMkdir, "moved"));
    src.apply(op(OpKind::kCreate, "moved/old", "", 10));
    src.write(10, 0, "old contents");
    src.apply(op(OpKind::kMkdir, "moved/deep"));
    src.apply(op(OpKind::kCreate, "moved/deep/f", "", 11));
    src.write(11, 0, "deep");
    src.apply(op(OpKind::kCreate, "chain0", "", 12));
    src.write(12, 0, "chained");
  }

  void heavy_batch(Source& src) {
    // write x; mv x y; write x
    src.apply(op(OpKind::kRename, "x", "y"));
    src.apply(op(OpKind::kCreate, "x", "", 2));
    src.write(2, 0, "second x, longer");
    // rm -rf moved; mv tree moved; mkdir tree
    src.apply(op(OpKind::kUnlink, "moved/deep/f"));
    src.apply(op(OpKind::kRmdir, "moved/deep"));
    src.apply(op(OpKind::kUnlink, "moved/old"));
    src.apply(op(OpKind::kRmdir, "moved"));
    src.apply(op(OpKind::kRename, "tree", "moved"));
    src.apply(op(OpKind::kMkdir, "tree"));
    // a rename chain, ending where it started
    src.apply(op(OpKind::kRename, "chain0", "chain1"));
    src.apply(op(OpKind::kRename, "chain1", "chain2"));
    src.apply(op(OpKind::kRename, "chain2", "chain0"));
    // a hard link to a symlink, then the first name goes
    Op sym = op(OpKind::kSymlink, "s", "points/nowhere");
    src.apply(sym);
    src.apply(op(OpKind::kLink, "s2", "s", 0));
    src.apply(op(OpKind::kRename, "s", "s3"));
    // xattrs and a truncate
    Op set = op(OpKind::kSetXattr, "y", "", 1);
    set.name = "user.k";
    set.value = "v1";
    src.apply(set);
    set.value = "v2";
    src.apply(set);
    Op shrink = op(OpKind::kTruncate, "", "", 2);
    shrink.size = 6;
    src.apply(shrink);
  }

  // Cuts after frame 0, 1, 2 ... until a cut comes after the last frame of the delivery.
  void run(Cut cut, changes::Limits limits) {
    for (uint64_t k = 0;; ++k) {
      SCOPED_TRACE("cut after frame " + std::to_string(k));
      testutil::TempDir dir("bkp-stream");
      Source src(dir);
      auto sink = open_sink(dir);
      ASSERT_TRUE(sink);
      Sender sender(src.log(), limits);
      first_batch(src);
      deliver(src, *sink, sender, UINT64_MAX, cut, true);
      heavy_batch(src);
      int connections = deliver(src, *sink, sender, k, cut);
      testutil::CompareOptions options;
      EXPECT_EQ(testutil::compare_trees(dir.sub("src"), dir.sub("dst"), options), "");
      EXPECT_EQ(xattr(dir.sub("dst/y")), "v2");
      if (HasFailure()) return;
      ASSERT_LE(k, 500u) << "the cut never came after the last frame";
      if (connections == 1) {  // the cut came after the last frame: every k was tried
        // The batch has well over 20 frames; fewer means the seam cut nothing.
        EXPECT_GT(k, 20u) << "the connection was never cut";
        return;
      }
    }
  }

  static std::string xattr(const std::string& path) {
    char buf[64];
    ssize_t n = lgetxattr(path.c_str(), "user.k", buf, sizeof buf);
    return n < 0 ? "" : std::string(buf, static_cast<size_t>(n));
  }
};

// The decisions a Position forces on the sender, one by one.
class SenderPositionTest : public ::testing::Test {
 protected:
  // A sender with batches 1 and 2 acknowledged and batch 3 in flight.
  void SetUp() override {
    ASSERT_EQ(sender_.position(wire::Position{0, 0, 0}), Sender::Resume::kContinue);
    for (int i = 0; i < 3; ++i) {
      log_.record(op(OpKind::kMkdir, "d" + std::to_string(i)));
      log_.record(op(OpKind::kMkdir, "e" + std::to_string(i)));
      ASSERT_NE(sender_.next(), nullptr);
      if (i < 2) ack();
    }
    ASSERT_EQ(sender_.next()->number, 3u);
  }
  // As await_ack does after Ack{n}, without a connection: the receiver says it committed n.
  void ack() {
    uint64_t n = sender_.next()->number;
    ASSERT_EQ(sender_.position(wire::Position{n, 0, 0}), Sender::Resume::kContinue);
  }

  changes::ChangeLog log_;
  Sender sender_{log_};
};

TEST_F(SenderPositionTest, ABatchTheReceiverCommittedIsDroppedAndNumberingGoesOn) {
  EXPECT_EQ(sender_.position(wire::Position{3, 0, 0}), Sender::Resume::kContinue);
  EXPECT_FALSE(sender_.in_flight()) << "its ack was lost, but the receiver has it";
  log_.record(op(OpKind::kMkdir, "next"));
  ASSERT_NE(sender_.next(), nullptr);
  EXPECT_EQ(sender_.next()->number, 4u);
}

TEST_F(SenderPositionTest, APartlyAppliedBatchResumesWhereTheReceiverStands) {
  EXPECT_EQ(sender_.position(wire::Position{2, 0, 1}), Sender::Resume::kContinue);
  EXPECT_TRUE(sender_.in_flight());
  EXPECT_EQ(sender_.resume_at(), 1u);
  EXPECT_EQ(sender_.next()->number, 3u);
}

TEST_F(SenderPositionTest, AReceiverBehindWhatItAcknowledgedGetsABaseline) {
  EXPECT_EQ(sender_.position(wire::Position{1, 0, 0}), Sender::Resume::kBaseline);
  EXPECT_FALSE(sender_.in_flight());
  log_.record(op(OpKind::kMkdir, "scan"));
  EXPECT_EQ(sender_.next()->number, 2u) << "numbering is the receiver's";
}

TEST_F(SenderPositionTest, AReceiverAheadOfUsGetsABaseline) {
  ack();  // nothing in flight now; the receiver stands at 3
  EXPECT_EQ(sender_.position(wire::Position{3, 0, 0}), Sender::Resume::kContinue);
  EXPECT_EQ(sender_.position(wire::Position{5, 0, 0}), Sender::Resume::kBaseline);
  EXPECT_EQ(sender_.position(wire::Position{5, 0, 0}), Sender::Resume::kContinue);
  EXPECT_EQ(sender_.position(wire::Position{5, 0, 2}), Sender::Resume::kBaseline)
      << "operations of a batch we never sent";
}

TEST_F(SenderPositionTest, ABaselineRequestDropsTheBatchInFlight) {
  EXPECT_EQ(sender_.position(wire::Position{0, 1, 0}), Sender::Resume::kBaseline);
  EXPECT_FALSE(sender_.in_flight());
  log_.record(op(OpKind::kMkdir, "scan"));
  EXPECT_EQ(sender_.next()->number, 1u);
}

// A log that overflowed while nobody drained it: the batch in flight still goes first, then the
// receiver, in step as it is, must get a reconcile.
TEST(SenderOverflowTest, AnOverflowedLogAsksForAReconcileOnceNothingIsInFlight) {
  changes::ChangeLog log(2);
  Sender sender{log};
  ASSERT_EQ(sender.position(wire::Position{0, 0, 0}), Sender::Resume::kContinue);
  log.record(op(OpKind::kMkdir, "a"));
  ASSERT_NE(sender.next(), nullptr);  // batch 1 in flight
  for (const char* d : {"b", "c", "d"}) log.record(op(OpKind::kMkdir, d));
  ASSERT_TRUE(log.overflowed());
  EXPECT_FALSE(sender.needs_reconcile()) << "batch 1 first";
  EXPECT_EQ(sender.position(wire::Position{0, 0, 0}), Sender::Resume::kContinue);
  EXPECT_EQ(sender.position(wire::Position{1, 0, 0}), Sender::Resume::kBaseline)
      << "batch 1 is committed, the rest was dropped";
  EXPECT_TRUE(sender.needs_reconcile());
  log.replace(changes::Batch{});
  EXPECT_FALSE(sender.needs_reconcile());
}

// The linger holds back a log of data only, for at most its time, and never anything else. The
// clock is passed in, so nothing here depends on how fast the test runs.
TEST(SenderLingerTest, OnlyAYoungLogOfDataOnlyWaitsAndNeverLongerThanTheLinger) {
  using std::chrono::milliseconds;
  using std::chrono::nanoseconds;
  const Linger linger{milliseconds(20), 1u << 20};
  changes::ChangeLog log;
  Sender sender{log};
  ASSERT_EQ(sender.position(wire::Position{0, 0, 0}), Sender::Resume::kContinue);
  EXPECT_EQ(sender.linger_left(linger, wire::realtime_ns()), nanoseconds(0)) << "empty log";

  log.write(changes::FileRef{7, ""}, 0, 4096);
  const int64_t since = log.since_ns();
  ASSERT_NE(since, 0);
  EXPECT_EQ(sender.linger_left(linger, since), milliseconds(20));
  EXPECT_EQ(sender.linger_left(linger, since + 15'000'000), milliseconds(5));
  EXPECT_EQ(sender.linger_left(linger, since + 20'000'000), nanoseconds(0)) << "old enough";
  EXPECT_EQ(sender.linger_left(linger, since - 1'000'000'000), nanoseconds(0))
      << "a clock that went back must not hold the batch";

  log.write(changes::FileRef{8, ""}, 0, 1u << 20);
  EXPECT_EQ(sender.linger_left(linger, since), nanoseconds(0)) << "enough bytes";

  changes::ChangeLog log2;
  Sender with_op{log2};
  ASSERT_EQ(with_op.position(wire::Position{0, 0, 0}), Sender::Resume::kContinue);
  log2.write(changes::FileRef{7, ""}, 0, 4096);
  log2.record(op(OpKind::kMkdir, "d"));
  EXPECT_EQ(with_op.linger_left(linger, log2.since_ns()), nanoseconds(0)) << "an operation";

  changes::ChangeLog log3;
  Sender in_flight{log3};
  ASSERT_EQ(in_flight.position(wire::Position{0, 0, 0}), Sender::Resume::kContinue);
  log3.record(op(OpKind::kMkdir, "d"));
  ASSERT_NE(in_flight.next(), nullptr);
  log3.write(changes::FileRef{7, ""}, 0, 4096);
  EXPECT_EQ(in_flight.linger_left(linger, log3.since_ns()), nanoseconds(0))
      << "the batch in flight is sent again at once";
}

TEST(SenderResumeTest, AResumedSenderNumbersOnFromTheRecordedCommit) {
  changes::ChangeLog log;
  Sender sender{log};
  sender.resume_after(7);
  EXPECT_EQ(sender.committed(), 7u);
  EXPECT_EQ(sender.position(wire::Position{7, 0, 0}), Sender::Resume::kContinue);
  EXPECT_EQ(sender.next(), nullptr) << "nothing to send";
  log.record(op(OpKind::kMkdir, "new"));
  ASSERT_NE(sender.next(), nullptr);
  EXPECT_EQ(sender.next()->number, 8u);
  EXPECT_EQ(sender.committed(), 7u) << "batch 8 is in flight, not committed";
}

TEST(SenderResumeTest, AReceiverThatDisagreesWithTheRecordGetsABaseline) {
  for (const wire::Position& p : {wire::Position{6, 0, 0}, wire::Position{9, 0, 0},
                                  wire::Position{7, 0, 1}, wire::Position{7, 1, 0},
                                  wire::Position{0, 1, 0}}) {
    changes::ChangeLog log;
    Sender sender{log};
    sender.resume_after(7);
    EXPECT_EQ(sender.position(p), Sender::Resume::kBaseline)
        << "committed " << p.committed << " need_baseline " << p.need_baseline << " applied "
        << p.applied;
    EXPECT_EQ(sender.committed(), p.committed) << "numbering is the receiver's";
  }
}

// What a Receiver tells a sender, across its own restarts (reopened from disk).
class ReceiverTest : public ::testing::Test {
 protected:
  ReceiverTest() { reopen(); }
  void reopen() {
    receiver_.reset();
    applier_ = std::move(*changes::Applier::open(dir_.path(), "tree", "ids"));
    receiver_ = std::move(*Receiver::open(dir_.path(), *applier_));
  }
  void apply(const Op& o) { ASSERT_TRUE(receiver_->apply(o)); }
  void write(uint64_t id, const std::string& data) {
    ASSERT_TRUE(receiver_->write(testutil::write_of(id, 0, data)));
  }
  void commit(uint64_t n) { ASSERT_TRUE(receiver_->commit(wire::Commit{n})); }
  // A new stream's first batch: the baseline its position asks for, holding `ops`.
  void first_batch(const std::vector<Op>& ops = {}) {
    EXPECT_EQ(receiver_->position(kInstance), (wire::Position{0, 1, 0}));
    apply(op(OpKind::kSyncBegin, ""));
    for (const Op& o : ops) apply(o);
    apply(op(OpKind::kSyncEnd, ""));
    commit(1);
  }
  // The inode at tree/name.
  ino_t ino(const std::string& name) {
    struct stat st{};
    EXPECT_EQ(::stat(dir_.sub("tree/" + name).c_str(), &st), 0) << name;
    return st.st_ino;
  }
  // Applies an exchange of `a` and `b` in a child process that dies between the swap and
  // noting it (BKP_TEST_DIE_AFTER_EXCHANGE), as a killed receiver would.
  Op die_inside_exchange(const std::string& a, const std::string& b) {
    Op exchange = op(OpKind::kRename, a, b);
    exchange.flags = RENAME_EXCHANGE;
    EXPECT_EXIT(
        {
          ::setenv("BKP_TEST_DIE_AFTER_EXCHANGE", "1", 1);
          (void)receiver_->apply(exchange);
          ::_exit(0);  // not reached if the seam works
        },
        ::testing::ExitedWithCode(86), "");
    return exchange;
  }
  // The process dies (no clean stop: the Receiver's destructor never runs) and is started
  // again; with `machine`, on a machine that restarted meanwhile (another boot id).
  void crash_and_restart(bool machine) {
    receiver_->abandon();  // a killed process runs no clean stop
    receiver_.reset();
    if (machine) ::setenv("BKP_TEST_BOOT_ID", ("boot " + std::to_string(++boots_)).c_str(), 1);
    reopen();
  }
  void restart_machine() {
    receiver_.reset();
    ::setenv("BKP_TEST_BOOT_ID", ("boot " + std::to_string(++boots_)).c_str(), 1);
    reopen();
  }
  // A file with id 5 whose content the applier knows to match source ctime kCtime.
  static std::vector<Op> file_with_ctime() {
    Op attr = op(OpKind::kAttr, "", "", 5);
    attr.ctime_ns = kCtime;
    return {op(OpKind::kCreate, "f", "", 5), attr};
  }
  // After first_batch(file_with_ctime()): batch 2 begun with a mkdir and data for file 5.
  void begin_second_batch() {
    receiver_->position(kInstance);
    apply(op(OpKind::kMkdir, "d"));
    write(5, "part of batch 2");
  }
  void TearDown() override { ::unsetenv("BKP_TEST_BOOT_ID"); }
  static constexpr int64_t kCtime = 1'700'000'000'000'000'000;
  int boots_ = 0;

  void expect_refused(const Result<void>& r) {
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EPROTO);
    EXPECT_NE(r.error().message.find("baseline"), std::string::npos) << r.error().message;
  }

  testutil::TempDir dir_{"bkp-receiver"};
  std::unique_ptr<changes::Applier> applier_;
  std::unique_ptr<Receiver> receiver_;
};

TEST_F(ReceiverTest, AnUnknownStreamGetsABaselineAndIsRecordedAtItsFirstCommit) {
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{0, 1, 0}));
  apply(op(OpKind::kSyncBegin, ""));
  apply(op(OpKind::kMkdir, "a"));
  apply(op(OpKind::kSyncEnd, ""));
  commit(1);
  reopen();
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 0}));
  EXPECT_EQ(receiver_->position(kInstance + 1), (wire::Position{0, 1, 0}));
}

TEST_F(ReceiverTest, ASenderToldToSendABaselineCannotSkipIt) {
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{0, 1, 0}));
  expect_refused(receiver_->apply(op(OpKind::kMkdir, "a")));
  expect_refused(receiver_->write(testutil::write_of(5, 0, "data")));
  auto committed = receiver_->commit(wire::Commit{1});
  ASSERT_FALSE(committed) << "an empty batch would record the stream with nothing in the tree";
  EXPECT_EQ(committed.error().code, EPROTO);
  apply(op(OpKind::kSyncBegin, ""));
  apply(op(OpKind::kMkdir, "a"));
  commit(1);  // a baseline spanning batches: later ones need no sync-begin
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 0}));
  apply(op(OpKind::kMkdir, "b"));
  reopen();
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 1, 0}));
  // A receiver that restarted inside a baseline holds the sender to a new one.
  expect_refused(receiver_->apply(op(OpKind::kMkdir, "c")));
  apply(op(OpKind::kSyncBegin, ""));
  apply(op(OpKind::kSyncEnd, ""));
  commit(2);
}

TEST_F(ReceiverTest, ARestartInsideABatchKeepsTheOperationsItApplied) {
  first_batch();
  apply(op(OpKind::kMkdir, "a"));
  apply(op(OpKind::kMkdir, "b"));
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 2}));
  reopen();
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 2}));
}

TEST_F(ReceiverTest, ARestartInsideABaselineAsksForANewOne) {
  receiver_->position(kInstance);
  apply(op(OpKind::kSyncBegin, ""));
  apply(op(OpKind::kMkdir, "a"));
  commit(1);  // a baseline spanning batches: sync-end is still to come
  apply(op(OpKind::kMkdir, "b"));
  reopen();
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 1, 0}))
      << "the names the baseline made are lost with the process";
}

// RENAME_EXCHANGE is the one operation that does not tolerate its own earlier effect: a
// receiver that died between the swap and noting it swapped the names back when the exchange
// was resent (a known limit until 2026-12-02).
TEST_F(ReceiverTest, AnExchangeResentAfterACrashBetweenTheSwapAndItsNoteIsNotAppliedTwice) {
  first_batch({op(OpKind::kCreate, "a", "", 1), op(OpKind::kCreate, "b", "", 2)});
  const ino_t a = ino("a"), b = ino("b");
  ASSERT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 0}));
  apply(op(OpKind::kMkdir, "d"));
  const Op exchange = die_inside_exchange("a", "b");
  EXPECT_EQ(ino("a"), b) << "the child swapped the names before it died";
  crash_and_restart(/*machine=*/false);  // the child was this receiver: no clean stop
  ASSERT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 1}))
      << "the exchange was not noted as applied";
  // A frame before the exchange is resent (its record is flushed before the change), and a
  // crash again: the exchange must still be noted.
  write(1, "data");
  crash_and_restart(/*machine=*/false);
  ASSERT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 1}));
  apply(exchange);  // the sender resends it
  EXPECT_EQ(ino("a"), b);
  EXPECT_EQ(ino("b"), a);
  apply(exchange);  // a new exchange in the same batch swaps again
  EXPECT_EQ(ino("a"), a);
  commit(2);
}

TEST_F(ReceiverTest, AnExchangeNotedButNotCarriedOutBeforeACrashIsApplied) {
  first_batch({op(OpKind::kCreate, "a", "", 1), op(OpKind::kCreate, "b", "", 2)});
  const ino_t a = ino("a"), b = ino("b");
  receiver_->position(kInstance);
  const Op exchange = die_inside_exchange("a", "b");
  // Swapped back behind the receiver's back: the tree is as if the process had died after
  // noting the exchange and before carrying it out.
  ASSERT_EQ(::renameat2(AT_FDCWD, dir_.sub("tree/a").c_str(), AT_FDCWD,
                        dir_.sub("tree/b").c_str(), RENAME_EXCHANGE),
            0);
  crash_and_restart(/*machine=*/false);
  ASSERT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 0}));
  apply(exchange);
  EXPECT_EQ(ino("a"), b);
  EXPECT_EQ(ino("b"), a);
  commit(2);
}

TEST_F(ReceiverTest, AtCommitOnlyWhenOpenedOnACommitWithNothingAppliedSince) {
  first_batch({op(OpKind::kCreate, "f", "", 5)});
  reopen();
  EXPECT_TRUE(receiver_->at_commit());
  receiver_->position(kInstance);
  apply(op(OpKind::kMkdir, "d"));
  EXPECT_FALSE(receiver_->at_commit()) << "applied since it was opened";
  commit(2);
  EXPECT_FALSE(receiver_->at_commit()) << "only what open() found is vouched for";
  reopen();
  EXPECT_TRUE(receiver_->at_commit());
}

TEST_F(ReceiverTest, ABatchBegunWithDataIsNotAtCommitAfterARestart) {
  first_batch({op(OpKind::kCreate, "f", "", 5)});
  write(5, "data before any operation of batch 2");
  reopen();
  EXPECT_FALSE(receiver_->at_commit()) << "the tree holds part of batch 2";
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 0}))
      << "data is idempotent: the whole batch is simply sent again";
}

TEST_F(ReceiverTest, ABatchBegunWithOperationsOrInsideABaselineIsNotAtCommit) {
  first_batch();
  apply(op(OpKind::kMkdir, "a"));
  reopen();
  EXPECT_FALSE(receiver_->at_commit());
  receiver_->position(kInstance);
  apply(op(OpKind::kSyncBegin, ""));
  commit(2);
  reopen();
  EXPECT_FALSE(receiver_->at_commit()) << "a baseline is unfinished";
}

TEST_F(ReceiverTest, OnlyTheNextBatchCanCommit) {
  first_batch();
  for (uint64_t wrong : {1u, 3u}) {
    auto r = receiver_->commit(wire::Commit{wrong});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EPROTO);
  }
  commit(2);
}

// A restart of the machine keeps only what was flushed. Until 2026-12-02 `position` was never
// flushed, so after a power cut it could say "at the commit" while the tree held part of the
// next batch (or the reverse), and the source ctimes could vouch for bytes that never reached
// the disk: the sender resumed, and those bytes stayed missing on this copy and every copy fed
// from it.
TEST_F(ReceiverTest, AMachineRestartInsideABatchAsksForABaselineThatComparesEveryFile) {
  first_batch(file_with_ctime());
  ASSERT_EQ(applier_->source_ctime(5), kCtime);
  begin_second_batch();
  crash_and_restart(/*machine=*/false);
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 1}))
      << "a crash of the process alone resumes where the batch stood";
  crash_and_restart(/*machine=*/true);
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 1, 0}));
  EXPECT_FALSE(receiver_->at_commit());
  EXPECT_EQ(applier_->source_ctime(5), 0) << "a ctime may vouch for bytes the restart lost";
  crash_and_restart(/*machine=*/false);
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 1, 0}))
      << "restarted again before the baseline came: it is still due";
  EXPECT_EQ(applier_->source_ctime(5), 0);
  apply(op(OpKind::kSyncBegin, ""));
  apply(op(OpKind::kSyncEnd, ""));
  commit(2);
  crash_and_restart(/*machine=*/true);
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{2, 0, 0}));
}

TEST_F(ReceiverTest, AMachineRestartAtACommitResumesThere) {
  first_batch(file_with_ctime());
  receiver_->position(kInstance);
  apply(op(OpKind::kMkdir, "d"));
  commit(2);
  crash_and_restart(/*machine=*/true);
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{2, 0, 0}));
  EXPECT_TRUE(receiver_->at_commit());
  EXPECT_EQ(applier_->source_ctime(5), kCtime);
  crash_and_restart(/*machine=*/true);  // opened, nothing applied, and the machine restarts again
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{2, 0, 0}));
  EXPECT_TRUE(receiver_->at_commit());
}

TEST_F(ReceiverTest, ACleanStopInsideABatchSurvivesAMachineRestart) {
  first_batch(file_with_ctime());
  begin_second_batch();
  restart_machine();  // a clean stop first, as at a shutdown
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 1}));
  EXPECT_FALSE(receiver_->at_commit()) << "the tree holds part of batch 2";
  EXPECT_EQ(applier_->source_ctime(5), 0) << "forgotten when its content changed, as always";
  apply(op(OpKind::kMkdir, "e"));
  commit(2);
  crash_and_restart(/*machine=*/true);
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{2, 0, 0}));
}

// A stop notes what the tree holds, which is what the last change noted, not whichever stream
// said hello last: a stranger's hello (told to send a baseline, gone before its first frame)
// must not make the recorded stream resend the operations the tree already holds.
TEST_F(ReceiverTest, ACleanStopAfterAStrangersHelloKeepsWhatTheRecordedStreamApplied) {
  first_batch(file_with_ctime());
  begin_second_batch();
  ASSERT_EQ(receiver_->position(kInstance + 1), (wire::Position{0, 1, 0}));
  reopen();  // a clean stop first
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 1}));
  ASSERT_EQ(receiver_->position(kInstance + 1), (wire::Position{0, 1, 0}));
  restart_machine();
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 1}));
}

// backupd seeds a new mirror from a snapshot through the Applier, not the stream: a restart of
// the machine in the middle must not leave the seed's source ctimes vouching for lost bytes.
TEST_F(ReceiverTest, AChangeOutsideTheStreamBeforeAMachineRestartAsksForABaseline) {
  first_batch(file_with_ctime());
  ASSERT_TRUE(receiver_->before_outside_change());
  crash_and_restart(/*machine=*/false);
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 0}));
  EXPECT_EQ(applier_->source_ctime(5), kCtime);
  ASSERT_TRUE(receiver_->before_outside_change());
  crash_and_restart(/*machine=*/true);
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 1, 0}));
  EXPECT_EQ(applier_->source_ctime(5), 0);
}

// A change reaches the tree only once its batch's note is durable: otherwise a restart of the
// machine could find the commit's record and believe the tree unchanged. A FIFO in place of the
// record stands for a disk that fails its writes.
TEST_F(ReceiverTest, AChangeWhoseNoteCannotBeMadeDurableIsRefusedAndNotApplied) {
  first_batch(file_with_ctime());
  const std::string record = dir_.sub("position");
  ASSERT_EQ(::unlink(record.c_str()), 0);
  ASSERT_EQ(::mkfifo(record.c_str(), 0644), 0);
  crash_and_restart(/*machine=*/false);
  ASSERT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 0}));
  auto made = receiver_->apply(op(OpKind::kMkdir, "d"));
  ASSERT_FALSE(made) << "a change was applied under a note that is not on disk";
  EXPECT_NE(made.error().message.find("position"), std::string::npos) << made.error().message;
  struct stat st{};
  EXPECT_NE(::lstat(dir_.sub("tree/d").c_str(), &st), 0) << "the change reached the tree";
  auto written = receiver_->write(testutil::write_of(5, 0, "data"));
  ASSERT_FALSE(written);
  EXPECT_EQ(testutil::read_file(dir_.sub("tree/f")).value_or("(none)"), "");
  EXPECT_FALSE(receiver_->before_outside_change());
}

// While it lives, the descriptor this process holds open on `path` refers to a FIFO instead
// (a positioned write to it fails with ESPIPE): a disk that fails for a moment, then recovers.
class FailingWhileAlive {
 public:
  FailingWhileAlive(const std::string& path, const std::string& fifo) {
    namespace fs = std::filesystem;
    for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      if (fs::read_symlink(e.path(), ec) == path) fd_ = std::stoi(e.path().filename().string());
    }
    EXPECT_GE(fd_, 0) << "no open descriptor of " << path;
    EXPECT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
    UniqueFd pipe(::open(fifo.c_str(), O_RDWR | O_CLOEXEC));
    saved_.reset(::fcntl(fd_, F_DUPFD_CLOEXEC, 0));
    EXPECT_TRUE(pipe && saved_);
    EXPECT_GE(::dup3(pipe.get(), fd_, O_CLOEXEC), 0);
  }
  ~FailingWhileAlive() { EXPECT_GE(::dup3(saved_.get(), fd_, O_CLOEXEC), 0); }
  FailingWhileAlive(const FailingWhileAlive&) = delete;
  FailingWhileAlive& operator=(const FailingWhileAlive&) = delete;

 private:
  int fd_ = -1;
  UniqueFd saved_;
};

TEST_F(ReceiverTest, AStreamWhoseNoteFailedOnceGoesOnAndIsRecordedOnceTheDiskRecovers) {
  first_batch(file_with_ctime());
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 0}));
  {
    FailingWhileAlive failing(dir_.sub("position"), dir_.sub("fifo"));
    EXPECT_FALSE(receiver_->write(testutil::write_of(5, 0, "first try")));
  }
  EXPECT_EQ(testutil::read_file(dir_.sub("tree/f")).value_or("(none)"), "");
  // The sender reconnects and resends the batch: the same position, and this time it lands.
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 0}));
  write(5, "second try");
  crash_and_restart(/*machine=*/false);
  EXPECT_FALSE(receiver_->at_commit()) << "the record lost that batch 2's data is in the tree";
  EXPECT_EQ(receiver_->position(kInstance), (wire::Position{1, 0, 0}));
  apply(op(OpKind::kMkdir, "e"));
  commit(2);
  reopen();
  EXPECT_TRUE(receiver_->at_commit());
  EXPECT_EQ(testutil::read_file(dir_.sub("tree/f")).value_or("(none)"), "second try");
}

TEST_F(StreamTest, ACutAtAnyFrameConvergesWithTheReceiverAlive) {
  run(Cut::kLinkOnly, changes::Limits{});
}

TEST_F(StreamTest, ACutAtAnyFrameConvergesWhenTheReceiverRestarts) {
  run(Cut::kReceiverRestarts, changes::Limits{});
}

TEST_F(StreamTest, ACutAtAnyFrameOfBoundedBatchesConverges) {
  run(Cut::kReceiverRestarts, changes::Limits{5, 100000});
}

}  // namespace
}  // namespace bkp::stream

namespace bkp::stream {
namespace {

// The sending side's tree and the receiving side, for one reconcile scenario.
class ReconcileTest : public ::testing::Test {
 protected:
  struct World {
    testutil::TempDir dir{"bkp-reconcile"};
    std::unique_ptr<testutil::Sink> sink = open_sink(dir);
    std::string at(const std::string& rel) const { return dir.sub("src") + "/" + rel; }
  };

  static void put(const World& w, const std::string& rel, const std::string& data) {
    UniqueFd fd(::open(w.at(rel).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd) << rel;
    ASSERT_EQ(::write(fd.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
  }
  static void pwrite_at(const World& w, const std::string& rel, off_t offset,
                        const std::string& data) {
    UniqueFd fd(::open(w.at(rel).c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(fd) << rel;
    ASSERT_EQ(::pwrite(fd.get(), data.data(), data.size(), offset),
              static_cast<ssize_t>(data.size()));
  }
  static std::string bytes(size_t n, unsigned seed) {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 2654435761u + seed) >> 13);
    return s;
  }

  // Every kind of entry, a file with a hard link and an xattr, a sparse file, 1.3 MiB in all.
  static void make_tree(const World& w) {
    ASSERT_EQ(mkdir(w.at("").c_str(), 0755), 0);
    ASSERT_EQ(mkdir(w.at("d").c_str(), 0755), 0);
    put(w, "a", bytes(300 * 1024, 1));
    put(w, "big", bytes((5 << 20) + 1000, 2));  // read past the page cache (direct_reader.h)
    put(w, "small", "ten bytes!");
    put(w, "d/e", "gone later");
    put(w, "sparse", "");
    ASSERT_EQ(truncate(w.at("sparse").c_str(), 1 << 20), 0);
    pwrite_at(w, "sparse", 512 * 1024, "island");
    ASSERT_EQ(link(w.at("a").c_str(), w.at("a2").c_str()), 0);
    ASSERT_EQ(symlink("a", w.at("s").c_str()), 0);
    ASSERT_EQ(setxattr(w.at("a").c_str(), "user.k", "v", 1, 0), 0);
  }

  // What happens to the tree while no sender runs.
  static void change_tree(const World& w) {
    struct stat st{};
    ASSERT_EQ(lstat(w.at("big").c_str(), &st), 0);
    pwrite_at(w, "big", 600 * 1024, "new bytes, old mtime");  // one 128 KiB block
    timespec times[2] = {st.st_atim, st.st_mtim};
    ASSERT_EQ(utimensat(AT_FDCWD, w.at("big").c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
    ASSERT_EQ(chmod(w.at("big").c_str(), 0600), 0);
    ASSERT_EQ(rename(w.at("a").c_str(), w.at("d/a-moved").c_str()), 0);  // its link a2 stays
    ASSERT_EQ(removexattr(w.at("d/a-moved").c_str(), "user.k"), 0);
    ASSERT_EQ(setxattr(w.at("d").c_str(), "user.new", "x", 1, 0), 0);
    ASSERT_EQ(unlink(w.at("d/e").c_str()), 0);
    ASSERT_EQ(rename(w.at("small").c_str(), w.at("small2").c_str()), 0);
    put(w, "n", "new file");
    pwrite_at(w, "sparse", 0, "head");  // its first block; the rest of it stays a hole
  }

  // A sender whose stream is `instance` (a new one: a restart) delivers everything, the first
  // connection cut after `cut_after` frames (with the receiver restarted after each cut when
  // `restart` is set). Returns the data bytes shipped and sets *connections.
  static uint64_t reconcile(World& w, uint64_t instance, uint64_t cut_after = UINT64_MAX,
                            bool restart = false, int* connections = nullptr) {
    changes::ChangeLog log;
    Sender sender(log);
    testutil::DirSource data(w.dir.sub("src"));
    changes::ShipCounters counters;
    auto n = testutil::deliver(*w.sink, {.sender = sender,
                                         .log = log,
                                         .data = data,
                                         .counters = counters,
                                         .instance = instance,
                                         .on_baseline = testutil::OnBaseline::kScan,
                                         .src_root = w.dir.sub("src"),
                                         .cut_after = cut_after,
                                         .restart_after_cut = restart,
                                         .timeout_ms = kTimeoutMs});
    if (!n) ADD_FAILURE() << n.error().message;
    if (connections != nullptr) *connections = n.value_or(0);
    return counters.data_bytes;
  }

  static std::string compare(const World& w) {
    testutil::CompareOptions options;
    return testutil::compare_trees(w.dir.sub("src"), w.dir.sub("dst"), options);
  }
};

TEST_F(ReconcileTest, ARestartedSenderShipsOnlyWhatDiffers) {
  World w;
  make_tree(w);
  uint64_t first = reconcile(w, 1);
  EXPECT_GE(first, (300 + 1024) * 1024u + 10 + 10 + 4096) << "the first contact is a full baseline";
  ASSERT_EQ(compare(w), "");

  EXPECT_EQ(reconcile(w, 2), 0u) << "nothing changed, yet data was shipped";
  ASSERT_EQ(compare(w), "");

  change_tree(w);
  EXPECT_EQ(reconcile(w, 3), 128 * 1024u + 4096 + 10 + 8)
      << "expected the changed block of big, the data of sparse's changed block (the rest of it "
         "goes as a hole), small (too small to verify) and n";
  EXPECT_EQ(compare(w), "");
}

// An unchanged directory costs one keep however much it holds; a change deep inside costs only
// its own path; a name removed behind the receiver's back with the directory's mtime put back
// is still pruned (the receiver lists more entries than the source has).
TEST_F(ReconcileTest, AnUnchangedSubtreeIsOneKeep) {
  World w;
  ASSERT_EQ(mkdir(w.at("").c_str(), 0755), 0);
  for (const char* d : {"t", "t/x", "t/x/y", "u"}) ASSERT_EQ(mkdir(w.at(d).c_str(), 0755), 0);
  for (int i = 0; i < 30; ++i) {
    put(w, "t/x/y/f" + std::to_string(i), bytes(100, i));
    put(w, "u/g" + std::to_string(i), bytes(100, 100 + i));
  }
  reconcile(w, 1);
  ASSERT_EQ(compare(w), "");

  uint64_t before = w.sink->ops();
  EXPECT_EQ(reconcile(w, 2), 0u);
  // sync-begin, keep t, keep u, the root's attr, sync-end.
  EXPECT_EQ(w.sink->ops() - before, 5u) << "an unchanged tree of 64 entries";
  ASSERT_EQ(compare(w), "");

  put(w, "t/x/y/f7", bytes(100, 77));  // new content: t, t/x and t/x/y are sent again
  struct stat st{};
  ASSERT_EQ(lstat(w.at("u").c_str(), &st), 0);
  ASSERT_EQ(unlink(w.at("u/g3").c_str()), 0);
  timespec times[2] = {st.st_atim, st.st_mtim};
  ASSERT_EQ(utimensat(AT_FDCWD, w.at("u").c_str(), times, 0), 0);
  before = w.sink->ops();
  EXPECT_EQ(reconcile(w, 3), 100u);
  EXPECT_LT(w.sink->ops() - before, 80u);
  EXPECT_EQ(compare(w), "");
}

// The reconcile's own frames (ManifestRequest, DigestRequests, keep, link by id, punch after
// sync-end) cut at every point, the receiver restarted after each cut: still exact.
TEST_F(ReconcileTest, ACutAtAnyFrameOfAReconcileConverges) {
  for (uint64_t k = 0;; ++k) {
    SCOPED_TRACE("cut after frame " + std::to_string(k));
    World w;
    make_tree(w);
    reconcile(w, 1);
    change_tree(w);
    int connections = 0;
    reconcile(w, 2, k, true, &connections);
    EXPECT_EQ(compare(w), "");
    if (HasFailure()) return;
    ASSERT_LE(k, 300u) << "the cut never came after the last frame";
    if (connections == 1) {
      EXPECT_GT(k, 20u) << "the connection was never cut";
      return;
    }
  }
}

// Random changes made while no sender runs, reconciled round after round: whatever the mix
// (rewrites with the mtime put back, renames over files, links, deletions of whole
// directories, type changes at a name, xattrs set and removed, holes punched, chmod), the
// receiver ends equal to the source, xattrs, link groups and holes included.
TEST_F(ReconcileTest, RandomChangesWhileDownAreAllFound) {
  World w;
  make_tree(w);
  reconcile(w, 1);
  ASSERT_EQ(compare(w), "");
  std::mt19937_64 rng(20261130);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  // Every regular file and directory of the source, relative.
  auto entries = [&](bool dirs) {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::recursive_directory_iterator(w.dir.sub("src"))) {
      if (e.is_symlink()) continue;
      if (dirs ? e.is_directory() : e.is_regular_file()) {
        out.push_back(std::filesystem::relative(e.path(), w.dir.sub("src")).string());
      }
    }
    if (dirs) out.push_back("");
    return out;
  };
  int differed = 0;
  uint64_t shipped = 0;
  for (uint64_t round = 0; round < 25; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    for (int i = 0; i < 12; ++i) {
      auto files = entries(false), dirs = entries(true);
      std::string dir = dirs[pick(dirs.size())];
      std::string fresh = (dir.empty() ? "" : dir + "/") + "n" + std::to_string(rng() % 1000);
      std::string file = files.empty() ? fresh : files[pick(files.size())];
      std::string p = w.at(file);
      struct stat st{};
      switch (pick(12)) {
        case 0:
          put(w, fresh, bytes(pick(400 * 1024), static_cast<unsigned>(rng())));
          break;
        case 1:  // rewrite in place, mtime put back
          if (lstat(p.c_str(), &st) == 0 && st.st_size > 0) {
            pwrite_at(w, file, static_cast<off_t>(pick(static_cast<size_t>(st.st_size))), "~~");
            timespec t[2] = {st.st_atim, st.st_mtim};
            utimensat(AT_FDCWD, p.c_str(), t, AT_SYMLINK_NOFOLLOW);
          }
          break;
        case 2: rename(p.c_str(), w.at(fresh).c_str()); break;
        case 3: link(p.c_str(), w.at(fresh).c_str()); break;
        case 4: unlink(p.c_str()); break;
        case 5: mkdir(w.at(fresh).c_str(), 0750); break;
        case 6:
          if (!dir.empty()) std::filesystem::remove_all(w.at(dir));
          break;
        case 7: setxattr(p.c_str(), "user.r", "v", 1, 0); break;
        case 8: removexattr(p.c_str(), "user.r"); break;
        case 9:
          if (lstat(p.c_str(), &st) == 0 && st.st_size > 8192) {
            UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CLOEXEC));
            fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096,
                      static_cast<off_t>(pick(static_cast<size_t>(st.st_size) - 4096)));
          }
          break;
        case 10: chmod(p.c_str(), 0600 | static_cast<mode_t>(pick(0100))); break;
        case 11:  // a name changes type: file -> symlink
          unlink(p.c_str());
          symlink("elsewhere", p.c_str());
          break;
      }
    }
    if (!compare(w).empty()) ++differed;
    shipped += reconcile(w, round + 2);
    ASSERT_EQ(compare(w), "");
  }
  // The changes were real: the trees differed before most reconciles, and data moved.
  EXPECT_GT(differed, 20);
  EXPECT_GT(shipped, 0u);
}

}  // namespace
}  // namespace bkp::stream
