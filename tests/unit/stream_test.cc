// stream::Sender and stream::Receiver over a socketpair, with the connection cut after every
// frame of a namespace-heavy batch (rename then re-create the same name, rename chains, rm -rf
// then re-create, a hard link to a symlink, xattrs, truncates): the receiver's tree must equal
// the sender's every time — with the receiver kept alive across the cut, and with it "killed"
// (its Applier and Receiver reopened from disk). The source side is itself an Applier-built
// tree recording into a ChangeLog, as backupd's mirror feeds a replica stream; like backupfs, it
// records each changed directory's attributes after every namespace operation.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/changes/applier.h"
#include "common/changes/change_log.h"
#include "common/net/conn.h"
#include "common/net/messenger.h"
#include "common/path.h"
#include "common/stream/receiver.h"
#include "common/stream/sender.h"
#include "tests/testutil/temp_dir.h"
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
      : applier_(*changes::Applier::open(dir.sub("src"), dir.sub("src-ids"))) {}

  void apply(const Op& o) {
    auto r = applier_->apply(o);
    ASSERT_TRUE(r) << r.error().message;
    switch (o.kind) {
      case OpKind::kTruncate: log_.truncate({o.id, ""}, o.size); break;
      case OpKind::kCreate:
        log_.record(o);
        log_.attrs({o.id, ""});
        break;
      default: log_.record(o);
    }
    if (o.kind != OpKind::kTruncate && o.kind != OpKind::kSetXattr) {
      dir_attr(std::string(parent_of(o.path)));
      if (o.kind == OpKind::kRename) dir_attr(std::string(parent_of(o.target)));
    }
    if (o.kind == OpKind::kMkdir) dir_attr(o.path);  // creation ops carry no times
  }
  void write(uint64_t id, uint64_t offset, const std::string& data) {
    wire::Write w;
    w.id = id;
    w.offset = offset;
    w.data = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    auto r = applier_->write(w);
    ASSERT_TRUE(r) << r.error().message;
    log_.write({id, ""}, offset, data.size());
  }

  changes::ChangeLog& log() { return log_; }
  changes::Applier& applier() { return *applier_; }

 private:
  void dir_attr(const std::string& rel) {
    struct stat st{};
    int fd = applier_->tree_fd();
    int rc = rel.empty() ? fstat(fd, &st) : fstatat(fd, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW);
    if (rc == 0) log_.record(wire::attr_from_stat(rel, 0, st));
  }

  std::unique_ptr<changes::Applier> applier_;
  changes::ChangeLog log_;
};

// The receiving side, reopened from disk by restart() as a restarted process would be.
class Sink {
 public:
  explicit Sink(const testutil::TempDir& dir) : dir_(dir) { restart(); }
  void restart() {
    receiver_.reset();
    applier_ = std::move(*changes::Applier::open(dir_.sub("dst"), dir_.sub("dst-ids")));
    auto r = Receiver::open(dir_.path(), *applier_);
    ASSERT_TRUE(r) << r.error().message;
    receiver_ = std::move(*r);
  }

  // Serves one connection: HelloOk with the position, then frames until it breaks.
  void serve(net::Conn& conn) {
    wire::HelloOk ok;
    ok.position = receiver_->position(kInstance);
    if (!net::send(conn, ok) || !conn.flush()) return;
    while (true) {
      auto f = conn.recv(kTimeoutMs);
      if (!f) return;
      Result<void> r;
      if (f->type == wire::MsgType::kOp) {
        auto o = wire::decode_op(f->payload);
        r = o ? receiver_->apply(*o) : Result<void>(tl::unexpected(o.error()));
      } else if (f->type == wire::MsgType::kWrite) {
        auto w = wire::decode_write(f->flags, f->payload);
        r = w ? receiver_->write(*w) : Result<void>(tl::unexpected(w.error()));
      } else if (f->type == wire::MsgType::kCommit) {
        auto n = receiver_->commit(*wire::decode_commit(f->payload));
        if (n) {
          if (!net::send(conn, wire::Ack{*n}) || !conn.flush()) return;
        } else {
          r = tl::unexpected(n.error());
        }
      }
      if (!r) {
        ADD_FAILURE() << "receiver: " << r.error().message;
        return;
      }
    }
  }

 private:
  const testutil::TempDir& dir_;
  std::unique_ptr<changes::Applier> applier_;
  std::unique_ptr<Receiver> receiver_;
};

class SourceData : public changes::DataSource {
 public:
  explicit SourceData(changes::Applier& a) : applier_(a) {}
  Result<UniqueFd> open_file(const changes::FileRef& f) override { return applier_.open_id(f.id); }

 private:
  changes::Applier& applier_;
};

enum class Cut { kLinkOnly, kReceiverRestarts };

// Sends everything in the source's log; the first connection is cut after `cut_after` frames.
// Returns how many connections it took (1: the cut came after the last frame).
// A receiver asks for a baseline only when it first meets the stream (the source's log then
// holds everything since the empty tree, which is one).
int deliver(Source& src, Sink& sink, Sender& sender, uint64_t cut_after, Cut cut,
            bool first_contact = false) {
  SourceData data(src.applier());
  changes::ShipCounters counters;
  for (int attempt = 0; attempt < 4; ++attempt) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    auto a = net::Conn::open(UniqueFd(sv[0]));
    auto b = net::Conn::open(UniqueFd(sv[1]));
    EXPECT_TRUE(a && b);
    if (attempt == 0) (*a)->cut_after(cut_after);
    std::thread rx([&] { sink.serve(**b); });
    bool done = false;
    [&] {
      auto ok = net::expect<wire::HelloOk>(**a, kTimeoutMs);
      if (!ok) return;
      if (sender.position(ok->position) == Sender::Resume::kBaseline && !first_contact) {
        ADD_FAILURE() << "unexpected baseline request";
        return;
      }
      while (sender.next() != nullptr) {
        if (!sender.send(**a, data, counters)) return;
        if (!sender.await_ack(**a, kTimeoutMs)) return;
      }
      done = true;
    }();
    ::shutdown((*a)->fd(), SHUT_RDWR);
    rx.join();
    if (done) return attempt + 1;
    if (cut == Cut::kReceiverRestarts) sink.restart();
  }
  ADD_FAILURE() << "not delivered after 4 connections";
  return 0;
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
      Sink sink(dir);
      Sender sender(src.log(), limits);
      first_batch(src);
      deliver(src, sink, sender, UINT64_MAX, cut, true);
      heavy_batch(src);
      int connections = deliver(src, sink, sender, k, cut);
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

// What a Receiver tells a sender, across its own restarts (reopened from disk).
class ReceiverTest : public ::testing::Test {
 protected:
  ReceiverTest() { reopen(); }
  void reopen() {
    receiver_.reset();
    applier_ = std::move(*changes::Applier::open(dir_.sub("tree"), dir_.sub("ids")));
    receiver_ = std::move(*Receiver::open(dir_.path(), *applier_));
  }
  void apply(const Op& o) { ASSERT_TRUE(receiver_->apply(o)); }
  void commit(uint64_t n) { ASSERT_TRUE(receiver_->commit(wire::Commit{n})); }

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

TEST_F(ReceiverTest, ARestartInsideABatchKeepsTheOperationsItApplied) {
  receiver_->position(kInstance);
  commit(1);
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

TEST_F(ReceiverTest, OnlyTheNextBatchCanCommit) {
  receiver_->position(kInstance);
  commit(1);
  for (uint64_t wrong : {1u, 3u}) {
    auto r = receiver_->commit(wire::Commit{wrong});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EPROTO);
  }
  commit(2);
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
