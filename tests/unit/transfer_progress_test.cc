// SendProgress / ReceiveProgress / progress::Meter: the numbers an operator sees during a
// transfer — percentages that end at 100% only when everything is acknowledged, the file moving
// now named from the stream's own ops, episodes that end and can be interrupted — and the
// ProgressSource that reports them, which must pass everything else on to its source.
#include "common/changes/transfer_progress.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

namespace bkp::changes {
namespace {

wire::Op create(const std::string& path, uint64_t id) {
  wire::Op op;
  op.kind = wire::OpKind::kCreate;
  op.path = path;
  op.id = id;
  return op;
}

Batch two_files() {
  Batch b;
  b.number = 1;
  b.ops = {create("a.bin", 11), create("dir/b.bin", 22)};
  FileChange a, c;
  a.ref.id = 11;
  a.extents.add(0, 300);
  c.ref.id = 22;
  c.extents.add(0, 700);
  b.files = {a, c};
  return b;
}

TEST(SendProgress, CountsSentBytesAndEndsOnlyAtTheAck) {
  auto meter = std::make_shared<progress::Meter>("h:/v");
  ChangeLog log;
  SendProgress p(meter, log);
  Batch b = two_files();
  p.batch(b, "baseline");
  auto v = meter->view();
  EXPECT_TRUE(v.active);
  EXPECT_EQ(v.phase, "baseline");
  EXPECT_EQ(v.total_bytes, 1000u);
  EXPECT_EQ(v.percent(), 0);

  p.file(b.files[0].ref, "");
  EXPECT_EQ(meter->view().file, "a.bin");
  p.sent(300);
  p.file(b.files[1].ref, "");
  EXPECT_EQ(meter->view().file, "dir/b.bin");
  p.sent(700);
  v = meter->view();
  EXPECT_TRUE(v.active) << "everything sent but not acknowledged is not done";
  EXPECT_EQ(v.done_bytes, 1000u);
  EXPECT_EQ(v.percent(), 99);

  p.acked();
  v = meter->view();
  EXPECT_FALSE(v.active);
  EXPECT_EQ(v.percent(), 100);
  auto done = meter->take_finished();
  ASSERT_TRUE(done);
  EXPECT_EQ(done->done_bytes, 1000u);
  EXPECT_EQ(done->phase, "baseline");
  EXPECT_FALSE(meter->take_finished()) << "an episode is reported once";
}

TEST(SendProgress, NamesSurviveBatchesButNotRenames) {
  auto meter = std::make_shared<progress::Meter>("h:/v");
  ChangeLog log;
  SendProgress p(meter, log);
  Batch first = two_files();
  p.batch(first, "");
  p.acked();

  Batch second;  // only data for a file created in the first batch
  second.number = 2;
  FileChange a;
  a.ref.id = 11;
  a.extents.add(0, 10);
  second.files = {a};
  p.batch(second, "");
  p.file(a.ref, "");
  EXPECT_EQ(meter->view().file, "a.bin");
  p.sent(10);
  p.acked();

  Batch third = second;
  third.number = 3;
  wire::Op mv;
  mv.kind = wire::OpKind::kRename;
  mv.path = "a.bin";
  mv.target = "c.bin";
  third.ops = {mv};
  p.batch(third, "");
  p.file(a.ref, "");
  EXPECT_EQ(meter->view().file, "") << "a name that may be stale is not shown";
  p.file(a.ref, "c.bin");
  EXPECT_EQ(meter->view().file, "c.bin") << "a name given by the caller wins";
}

TEST(SendProgress, InterruptedEpisodeIsReportedAsStopped) {
  auto meter = std::make_shared<progress::Meter>("h:/v");
  ChangeLog log;
  SendProgress p(meter, log);
  Batch b = two_files();
  p.batch(b, "");
  p.sent(250);
  p.interrupted();
  auto done = meter->take_finished();
  ASSERT_TRUE(done);
  EXPECT_TRUE(done->interrupted);
  EXPECT_EQ(done->percent(), 25);
  EXPECT_EQ(done->phase, "catch-up");
  EXPECT_NE(progress::Display::describe(*done).find("stopped at 25%"), std::string::npos)
      << progress::Display::describe(*done);
}

// A replica stream's source is wrapped to report progress: the prefetch of the next files must
// still reach the mirror's source.
TEST(ProgressSource, PassesPrefetchesOnToItsSource) {
  struct Recorder : DataSource {
    Result<UniqueFd> open_file(const FileRef&) override { return fail(ENOENT, "none"); }
    void prefetch(const FileRef& file, uint64_t offset, uint64_t length) override {
      asked.push_back({file.id, offset, length});
    }
    std::vector<std::array<uint64_t, 3>> asked;
  } inner;
  auto meter = std::make_shared<progress::Meter>("test");
  ChangeLog log;
  SendProgress progress(meter, log);
  ProgressSource source(inner, progress);
  source.prefetch(FileRef{22, ""}, 100, 600);
  ASSERT_EQ(inner.asked.size(), 1u);
  EXPECT_EQ(inner.asked[0], (std::array<uint64_t, 3>{22, 100, 600}));
}

TEST(ReceiveProgress, SubtractsWhatWasAppliedFromTheSendersStatus) {
  auto meter = std::make_shared<progress::Meter>("h:/v");
  ReceiveProgress r(meter);
  wire::NodeStatus s;
  s.pending_bytes = 1000;  // the whole unacknowledged batch
  s.pending_ops = 2;
  s.pending_files = 2;
  r.status(s);
  r.op(create("a.bin", 11));
  r.op(create("dir/b.bin", 22));
  r.applied(11, 300);
  auto v = meter->view();
  EXPECT_EQ(v.file, "a.bin");
  EXPECT_EQ(v.done_bytes, 300u);
  EXPECT_EQ(v.total_bytes, 1000u);
  EXPECT_EQ(v.percent(), 30);
  r.status(s);  // a status in the middle of the batch still counts all of it
  EXPECT_EQ(meter->view().total_bytes, 1000u);
  r.applied(22, 600);
  EXPECT_EQ(meter->view().file, "dir/b.bin");
  r.applied(22, 100);
  r.committed();
  EXPECT_FALSE(meter->view().active);
  auto done = meter->take_finished();
  ASSERT_TRUE(done);
  EXPECT_EQ(done->done_bytes, 1000u);
  EXPECT_EQ(done->percent(), 100);
}

TEST(Meter, NamedPhaseAppliesToTheNextEpisodeOnly) {
  progress::Meter m("h:/v");
  m.begin("restore");
  m.update({0, 10, 1, 0});
  EXPECT_EQ(m.view().phase, "restore");
  m.update({10, 0, 0, 0});
  m.update({10, 5, 1, 0});
  EXPECT_EQ(m.view().phase, "catch-up");
  EXPECT_EQ(m.view().done_bytes, 0u);
}

// A catch-up under a live writer: the backlog's episode ends, and a short one (the next write)
// starts and ends before the display looks again. Both are reported, oldest first: the first
// report must not be the short one's "1.0 MiB in 0.0 s".
TEST(Meter, EveryEndedEpisodeIsReportedInOrder) {
  progress::Meter m("h:/v to r1");
  m.update({0, 32 << 20, 1, 0});
  m.update({32 << 20, 0, 0, 0});
  m.update({32 << 20, 1 << 20, 1, 0});
  m.update({33 << 20, 0, 0, 0});
  auto first = m.take_finished();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->done_bytes, 32u << 20);
  EXPECT_EQ(first->total_bytes, 32u << 20);
  auto second = m.take_finished();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->done_bytes, 1u << 20);
  EXPECT_FALSE(m.take_finished());
}

TEST(Meter, KeepsTheFirstAndTheNewestEndedEpisodes) {
  progress::Meter m("h:/v");
  const uint64_t n = progress::Meter::kKeptFinished + 5;
  for (uint64_t i = 1; i <= n; ++i) {  // episode i moves i bytes
    m.update({i * (i - 1) / 2, i, 1, 0});
    m.update({i * (i + 1) / 2, 0, 0, 0});
  }
  std::vector<uint64_t> sizes;
  while (auto v = m.take_finished()) sizes.push_back(v->done_bytes);
  ASSERT_EQ(sizes.size(), progress::Meter::kKeptFinished);
  EXPECT_EQ(sizes.front(), 1u);
  EXPECT_EQ(sizes[1], n - progress::Meter::kKeptFinished + 2);
  EXPECT_EQ(sizes.back(), n);
}

// backupd names every batch of a replica's baseline "baseline"; a batch sent while that episode
// runs must not leave the name behind for the next episode, a later catch-up.
TEST(Meter, NamingTheRunningEpisodeAgainNamesNothingElse) {
  progress::Meter m("h:/v to r1");
  m.begin("baseline");
  m.update({0, 10, 1, 0});
  m.update({5, 5, 1, 0});
  m.begin("baseline");  // the baseline's second batch
  m.update({10, 0, 0, 0});
  m.update({10, 7, 1, 0});
  EXPECT_EQ(m.view().phase, "catch-up");
}

TEST(Progress, ParseEvery) {
  EXPECT_EQ(progress::parse_every("0.2").value(), std::chrono::milliseconds(200));
  EXPECT_EQ(progress::parse_every("10").value(), std::chrono::milliseconds(10000));
  for (const char* bad : {"", "0", "-1", "abc", "1s", "nan", "100000"}) {
    EXPECT_FALSE(progress::parse_every(bad)) << bad;
  }
}

TEST(Progress, ParseBytes) {
  EXPECT_EQ(progress::parse_bytes("0").value(), 0u);
  EXPECT_EQ(progress::parse_bytes("4096").value(), 4096u);
  EXPECT_EQ(progress::parse_bytes("64M").value(), 64u << 20);
  EXPECT_EQ(progress::parse_bytes("64MiB").value(), 64u << 20);
  EXPECT_EQ(progress::parse_bytes("500G").value(), uint64_t{500} << 30);
  EXPECT_EQ(progress::parse_bytes("2T").value(), uint64_t{2} << 40);
  for (const char* bad : {"", "G", "-1", "1.5G", "1g", "1GB", "1 G", "9000000T",
                          "99999999999999999999"}) {
    EXPECT_FALSE(progress::parse_bytes(bad)) << bad;
  }
}

}  // namespace
}  // namespace bkp::changes
