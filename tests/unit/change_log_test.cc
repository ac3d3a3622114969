// ChangeLog: records what changed, not the bytes. Writes to a file coalesce into ranges,
// truncate is an operation that also clips pending ranges, a newer directory Attr replaces an
// older one, take() hands out cuts within limits (operations first, then data), replace()
// swaps in a baseline, and the log dates its oldest change.
#include "common/changes/change_log.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace bkp::changes {
namespace {

using namespace std::chrono_literals;
using wire::Op;
using wire::OpKind;

FileRef file(uint64_t id) { return FileRef{id, "handle-" + std::to_string(id)}; }

Op mkdir_op(std::string path) {
  Op op;
  op.kind = OpKind::kMkdir;
  op.path = std::move(path);
  op.mode = 0755;
  return op;
}

Op attr_op(std::string path, uint32_t mode, int64_t mtime_ns = 0) {
  Op op;
  op.kind = OpKind::kAttr;
  op.path = std::move(path);
  op.mode = mode;
  op.mtime_ns = mtime_ns;
  return op;
}

// "mkdir a; attr d 700; truncate #1 50": the ops of a batch as one readable value.
std::string show_ops(const Batch& b) {
  std::string s;
  for (const Op& op : b.ops) {
    if (!s.empty()) s += "; ";
    switch (op.kind) {
      case OpKind::kMkdir:
        s += "mkdir " + op.path;
        break;
      case OpKind::kAttr: {
        char mode[16];
        snprintf(mode, sizeof mode, "%o", op.mode);
        s += "attr " + (op.id ? "#" + std::to_string(op.id) : op.path) + " " + mode;
        break;
      }
      case OpKind::kTruncate:
        s += "truncate #" + std::to_string(op.id) + " " + std::to_string(op.size);
        break;
      case OpKind::kPunch:
      case OpKind::kAllocate:
        s += std::string(wire::op_name(op.kind)) + " #" + std::to_string(op.id) + " " +
             std::to_string(op.offset) + "+" + std::to_string(op.size);
        break;
      default:
        s += std::string(wire::op_name(op.kind)) + " " + op.path;
        if (!op.target.empty()) s += " " + op.target;
        break;
    }
  }
  return s;
}

// "#1 [0,20) #2 [5,6) attrs": the files of a batch, ordered by id.
std::string show_files(const Batch& b) {
  std::vector<const FileChange*> files;
  for (const auto& f : b.files) files.push_back(&f);
  std::sort(files.begin(), files.end(),
            [](const FileChange* x, const FileChange* y) { return x->ref.id < y->ref.id; });
  std::string s;
  for (const FileChange* f : files) {
    if (!s.empty()) s += " ";
    s += "#" + std::to_string(f->ref.id);
    for (const auto& [start, end] : f->extents.ranges()) {
      s += " [" + std::to_string(start) + "," + std::to_string(end) + ")";
    }
    if (f->attrs) s += " attrs";
  }
  return s;
}

// "[0,10) [200,210)": the dirty ranges of one file in a batch ("none" if it is absent).
std::string extents(const Batch& b, uint64_t id) {
  for (const auto& f : b.files) {
    if (f.ref.id != id) continue;
    std::string s;
    for (const auto& [start, end] : f.extents.ranges()) {
      if (!s.empty()) s += " ";
      s += "[" + std::to_string(start) + "," + std::to_string(end) + ")";
    }
    return s;
  }
  return "none";
}

TEST(ChangeLogTest, WritesToOneFileMerge) {
  ChangeLog log;
  log.write(file(1), 0, 10);
  log.write(file(1), 10, 10);
  log.write(file(1), 5, 3);
  log.write(file(1), 100, 1);
  Batch b = log.take();
  EXPECT_EQ(show_files(b), "#1 [0,20) [100,101)");
  EXPECT_EQ(show_ops(b), "");
  EXPECT_EQ(b.dirty_bytes(), 21u);
  ASSERT_EQ(b.files.size(), 1u);
  EXPECT_EQ(b.files[0].ref.handle, "handle-1");
}

TEST(ChangeLogTest, FilesAreKeptApart) {
  ChangeLog log;
  log.write(file(1), 0, 10);
  log.write(file(2), 0, 5);
  log.attrs(file(3));
  EXPECT_EQ(show_files(log.take()), "#1 [0,10) #2 [0,5) #3 attrs");
}

TEST(ChangeLogTest, TruncateRecordsAnOpAndClips) {
  ChangeLog log;
  log.write(file(1), 0, 100);
  log.truncate(file(1), 50);
  Batch b = log.take();
  EXPECT_EQ(show_ops(b), "truncate #1 50");
  EXPECT_EQ(extents(b, 1), "[0,50)");
}

TEST(ChangeLogTest, TruncateToZeroLeavesNoData) {
  ChangeLog log;
  log.write(file(1), 0, 100);
  log.truncate(file(1), 0);
  Batch b = log.take();
  EXPECT_EQ(show_ops(b), "truncate #1 0");
  EXPECT_EQ(b.dirty_bytes(), 0u);
}

TEST(ChangeLogTest, WriteAfterTruncateIsKept) {
  ChangeLog log;
  log.write(file(1), 0, 100);
  log.truncate(file(1), 10);
  log.write(file(1), 200, 10);
  Batch b = log.take();
  EXPECT_EQ(show_ops(b), "truncate #1 10");
  EXPECT_EQ(extents(b, 1), "[0,10) [200,210)");
}

TEST(ChangeLogTest, OperationsKeepTheirOrder) {
  ChangeLog log;
  for (const char* p : {"z", "a", "m", "b"}) log.record(mkdir_op(p));
  EXPECT_EQ(show_ops(log.take()), "mkdir z; mkdir a; mkdir m; mkdir b");
}

TEST(ChangeLogTest, NewerAttrByPathSupersedesOlder) {
  ChangeLog log;
  log.record(attr_op("d", 0755, 1));
  log.record(mkdir_op("d/x"));
  log.record(attr_op("d", 0700, 2));
  Batch b = log.take();
  // One Attr for d, carrying the newest state, placed after what changed d since.
  EXPECT_EQ(show_ops(b), "mkdir d/x; attr d 700");
  EXPECT_EQ(b.ops.back().mtime_ns, 2);
}

Op rename_op(std::string from, std::string to) {
  Op op;
  op.kind = OpKind::kRename;
  op.path = std::move(from);
  op.target = std::move(to);
  return op;
}

// mkdir sa; touch -d 2001 sa; mv sa sb; mkdir sa: the first Attr of "sa" describes what is now
// "sb", so the second Attr of "sa" must not replace it.
TEST(ChangeLogTest, AttrIsNotSupersededAcrossARenameOfItsPath) {
  ChangeLog log;
  log.record(attr_op("sa", 0755, 2001));
  log.record(rename_op("sa", "sb"));
  log.record(mkdir_op("sa"));
  log.record(attr_op("sa", 0700, 2026));
  EXPECT_EQ(show_ops(log.take()), "attr sa 755; rename sa sb; mkdir sa; attr sa 700");
}

TEST(ChangeLogTest, AttrIsNotSupersededAcrossARenameOfAnAncestor) {
  ChangeLog log;
  log.record(attr_op("d/sub", 0755, 1));
  log.record(attr_op("d-x", 0755, 1));
  log.record(rename_op("d", "e"));
  log.record(attr_op("d/sub", 0700, 2));
  log.record(attr_op("d-x", 0711, 2));
  // "d/sub" was under the renamed directory: both kept. "d-x" was not: superseded.
  EXPECT_EQ(show_ops(log.take()), "attr d/sub 755; rename d e; attr d/sub 700; attr d-x 711");
}

TEST(ChangeLogTest, AttrsOfDifferentPathsAreAllKept) {
  ChangeLog log;
  log.record(attr_op("a", 0755));
  log.record(attr_op("b", 0700));
  log.record(attr_op("", 0711));
  EXPECT_EQ(show_ops(log.take()), "attr a 755; attr b 700; attr  711");
}

TEST(ChangeLogTest, AttrByIdIsNotMistakenForAPath) {
  ChangeLog log;
  Op by_id = attr_op("", 0600);
  by_id.id = 5;
  log.record(by_id);
  log.record(attr_op("", 0711));  // the root directory, by path
  EXPECT_EQ(show_ops(log.take()), "attr #5 600; attr  711");
}

TEST(ChangeLogTest, SupersedingDoesNotReachIntoATakenBatch) {
  ChangeLog log;
  log.record(attr_op("d", 0755));
  Batch first = log.take();
  log.record(mkdir_op("e"));
  log.record(attr_op("d", 0700));
  EXPECT_EQ(show_ops(first), "attr d 755");
  EXPECT_EQ(show_ops(log.take()), "mkdir e; attr d 700");
}

TEST(ChangeLogTest, TakeEmptiesTheLog) {
  ChangeLog log;
  log.record(mkdir_op("a"));
  log.write(file(1), 0, 10);
  Batch b1 = log.take();
  EXPECT_FALSE(b1.empty());
  EXPECT_EQ(b1.number, 0u);  // the stream's sender numbers batches
  LogStats s = log.stats();
  EXPECT_EQ(s.ops, 0u);
  EXPECT_EQ(s.files, 0u);
  EXPECT_EQ(s.dirty_bytes, 0u);

  EXPECT_TRUE(log.take().empty());
  log.write(file(1), 0, 10);
  EXPECT_EQ(show_files(log.take()), "#1 [0,10)");
}

TEST(ChangeLogTest, BoundedTakesCarryOperationsBeforeAnyData) {
  ChangeLog log;
  for (int i = 0; i < 5; ++i) log.record(mkdir_op("d" + std::to_string(i)));
  log.write(file(1), 0, 100);
  Limits limits{2, 1000};
  EXPECT_EQ(show_ops(log.take(limits)), "mkdir d0; mkdir d1");
  Batch second = log.take(limits);
  EXPECT_EQ(show_ops(second), "mkdir d2; mkdir d3");
  EXPECT_TRUE(second.files.empty()) << "data must wait until every operation before it went";
  Batch third = log.take(limits);
  EXPECT_EQ(show_ops(third), "mkdir d4");
  EXPECT_EQ(show_files(third), "#1 [0,100)");
  EXPECT_TRUE(log.take(limits).empty());
}

TEST(ChangeLogTest, BoundedTakesSplitLargeFilesByBytes) {
  ChangeLog log;
  log.write(file(1), 0, 100);
  log.write(file(1), 200, 100);
  log.attrs(file(1));
  Limits limits{100, 150};
  Batch a = log.take(limits);
  EXPECT_EQ(show_files(a), "#1 [0,100) [200,250) attrs");
  EXPECT_EQ(log.stats().dirty_bytes, 50u);
  Batch b = log.take(limits);
  EXPECT_EQ(show_files(b), "#1 [250,300) attrs");
  EXPECT_EQ(log.stats().files, 0u);
  EXPECT_EQ(log.stats().dirty_bytes, 0u);
}

// Every part of a scanned file is marked as scanned, not only the last: the shipper reads
// scanned data past the page cache (common/changes/direct_reader.h).
TEST(ChangeLogTest, EveryPartOfAScannedFileIsFromTheScan) {
  ChangeLog log;
  Batch scan;
  FileChange f;
  f.ref = file(1);
  f.extents.add(0, 300);
  scan.files.push_back(std::move(f));
  log.replace(std::move(scan));
  for (int i = 0; i < 3; ++i) {
    Batch part = log.take(Limits{100, 100});
    ASSERT_EQ(part.files.size(), 1u) << "take " << i << ": " << show_files(part);
    EXPECT_EQ(part.files[0].ref.id, 1u);
    EXPECT_TRUE(part.files[0].from_scan) << "take " << i;
  }
  log.write(file(2), 0, 10);
  Batch live = log.take();
  ASSERT_EQ(live.files.size(), 1u);
  EXPECT_FALSE(live.files[0].from_scan);
}

TEST(ChangeLogTest, AnAttrTakenAwayIsNotSupersededByALaterOne) {
  ChangeLog log;
  log.record(attr_op("d", 0700));
  log.record(mkdir_op("e"));
  EXPECT_EQ(show_ops(log.take(Limits{1, 1})), "attr d 700");
  log.record(attr_op("d", 0755));
  EXPECT_EQ(show_ops(log.take()), "mkdir e; attr d 755");
}

// The scan stands for every namespace operation recorded before it, but not for data: a file
// the scan found current may be written (or truncated) while the scan still runs, and that
// change must survive the replace (the fault run lost the last fsync'd append of a journal file
// this way: the reconcile kept the file, the log dropped the append).
TEST(ChangeLogTest, ReplaceSwapsInABaselineAndKeepsWhatWasRecordedOfFiles) {
  ChangeLog log;
  log.record(mkdir_op("old"));
  log.write(file(9), 0, 5);
  log.truncate(file(7), 10);
  Batch scan;
  scan.ops.push_back(mkdir_op("x"));
  FileChange f;
  f.ref = file(2);
  f.extents.add(0, 64);
  scan.files.push_back(std::move(f));
  log.replace(std::move(scan));
  log.record(mkdir_op("after"));
  EXPECT_EQ(log.stats().dirty_bytes, 64u + 5u);
  Batch b = log.take();
  EXPECT_EQ(show_ops(b), "mkdir x; truncate #7 10; mkdir after");
  EXPECT_EQ(show_files(b), "#2 [0,64) #7 attrs #9 [0,5) attrs");
}

// Memory stays bounded while nothing drains the log: past the bound its operations go, data
// ranges stay, nothing can be taken until a reconcile replaces it, and the reconcile itself (a
// scan longer than the bound) does not count against it.
TEST(ChangeLogTest, AFullLogDropsItsOperationsUntilAReconcile) {
  ChangeLog log(3);
  for (int i = 0; i < 3; ++i) log.record(mkdir_op("d" + std::to_string(i)));
  EXPECT_FALSE(log.overflowed());
  log.write(file(1), 0, 10);
  log.record(mkdir_op("d3"));
  EXPECT_TRUE(log.overflowed());
  log.truncate(file(1), 4);
  log.write(file(2), 8, 8);
  EXPECT_EQ(log.stats().ops, 5u) << "the dropped operations still show in the lag";
  EXPECT_EQ(log.stats().dirty_bytes, 4u + 8u);
  EXPECT_TRUE(log.wait(std::chrono::milliseconds(0))) << "an overflowed log has work to do";
  EXPECT_TRUE(log.take().empty()) << "nothing may be shipped before the reconcile";

  Batch scan;
  for (int i = 0; i < 10; ++i) scan.ops.push_back(mkdir_op("s" + std::to_string(i)));
  log.replace(std::move(scan));
  EXPECT_FALSE(log.overflowed());
  log.record(mkdir_op("after"));
  EXPECT_FALSE(log.overflowed()) << "the scan's own operations count against no bound";
  Batch b = log.take();
  EXPECT_EQ(b.ops.size(), 11u);
  EXPECT_EQ(show_files(b), "#1 [0,4) attrs #2 [8,16) attrs");
}

// A punch is an operation, and the data written there before it is not shipped after it (it
// would arrive as written zeros and fill the hole); data written there afterwards is.
TEST(ChangeLogTest, APunchDropsTheDataBeforeItButNotAfter) {
  ChangeLog log;
  log.write(file(1), 0, 100);
  log.punch(file(1), 20, 30);
  log.write(file(1), 40, 5);
  Batch b = log.take();
  EXPECT_EQ(show_ops(b), "punch #1 20+30");
  EXPECT_EQ(show_files(b), "#1 [0,20) [40,45) [50,100) attrs");
}

TEST(ChangeLogTest, TheOldestChangeIsDatedUntilTheLogEmpties) {
  ChangeLog log;
  EXPECT_EQ(log.since_ns(), 0);
  int64_t before = wire::realtime_ns();
  log.record(mkdir_op("a"));
  int64_t first = log.since_ns();
  EXPECT_GE(first, before);
  log.record(mkdir_op("b"));
  EXPECT_EQ(log.since_ns(), first);
  Batch one = log.take(Limits{1, 1});
  EXPECT_EQ(one.since_ns, first);
  EXPECT_EQ(log.since_ns(), first) << "what is left is as old as before";
  log.take();
  EXPECT_EQ(log.since_ns(), 0);
}

TEST(ChangeLogTest, StatsCountWhatIsPending) {
  ChangeLog log;
  log.record(mkdir_op("a"));
  log.record(mkdir_op("b"));
  log.write(file(1), 0, 10);
  log.write(file(1), 20, 10);
  log.write(file(2), 0, 5);
  LogStats s = log.stats();
  EXPECT_EQ(s.ops, 2u);
  EXPECT_EQ(s.files, 2u);
  EXPECT_EQ(s.ranges, 3u);
  EXPECT_EQ(s.dirty_bytes, 25u);

  // The totals are kept as the log changes: a write that bridges two ranges, a truncate, clear.
  log.write(file(1), 5, 20);  // [0,10) + [20,30) -> [0,30)
  s = log.stats();
  EXPECT_EQ(s.ranges, 2u);
  EXPECT_EQ(s.dirty_bytes, 35u);
  log.truncate(file(1), 8);  // -> [0,8)
  s = log.stats();
  EXPECT_EQ(s.ops, 3u);
  EXPECT_EQ(s.ranges, 2u);
  EXPECT_EQ(s.dirty_bytes, 13u);
  log.clear();
  s = log.stats();
  EXPECT_EQ(s.ranges, 0u);
  EXPECT_EQ(s.dirty_bytes, 0u);
}

TEST(ChangeLogTest, ClearDropsEverything) {
  ChangeLog log;
  log.record(mkdir_op("a"));
  log.write(file(1), 0, 10);
  log.clear();
  EXPECT_TRUE(log.take().empty());
}

TEST(ChangeLogTest, MemoryFollowsRangesNotBytes) {
  ChangeLog log;
  for (int i = 0; i < 200000; ++i) log.write(file(1), (i % 1024) * 4096, 4096);
  LogStats s = log.stats();
  EXPECT_EQ(s.ranges, 1u);
  EXPECT_EQ(s.dirty_bytes, 1024u * 4096);
}

TEST(ChangeLogTest, WaitTimesOutOnAnEmptyLog) {
  ChangeLog log;
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(log.wait(50ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 40ms);
}

TEST(ChangeLogTest, WaitReturnsAtOnceWhenSomethingIsPending) {
  ChangeLog log;
  log.write(file(1), 0, 1);
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(log.wait(10s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(ChangeLogTest, RecordFromAnotherThreadWakesAWaiter) {
  ChangeLog log;
  std::thread t([&] {
    std::this_thread::sleep_for(50ms);  // let the main thread block first
    log.record(mkdir_op("a"));
  });
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(log.wait(30s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  t.join();
}

TEST(ChangeLogTest, WakeInterruptsAWaiter) {
  ChangeLog log;
  std::thread t([&] {
    std::this_thread::sleep_for(50ms);
    log.wake();
  });
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(log.wait(30s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  t.join();
}

TEST(ChangeLogTest, ConcurrentRecordersLoseNothing) {
  ChangeLog log;
  std::vector<std::thread> threads;
  for (uint64_t t = 1; t <= 4; ++t) {
    threads.emplace_back([&log, t] {
      for (uint64_t i = 0; i < 1000; ++i) {
        log.write(file(t), i * 10, 10);
        if (i % 100 == 0) log.record(mkdir_op("t" + std::to_string(t) + "-" + std::to_string(i)));
      }
    });
  }
  std::vector<Batch> batches;
  for (int i = 0; i < 20; ++i) batches.push_back(log.take());
  for (auto& th : threads) th.join();
  batches.push_back(log.take());

  ExtentMap merged[5];
  size_t ops = 0;
  for (const Batch& b : batches) {
    ops += b.ops.size();
    for (const auto& f : b.files) merged[f.ref.id].merge(f.extents);
  }
  EXPECT_EQ(ops, 40u);
  for (int t = 1; t <= 4; ++t) {
    ASSERT_EQ(merged[t].range_count(), 1u) << "file " << t;
    EXPECT_EQ(merged[t].ranges().begin()->first, 0u);
    EXPECT_EQ(merged[t].ranges().begin()->second, 10000u);
  }
}

// A reconcile's verify mark (FileChange::verify): narrow() replaces the whole-file extents with
// the blocks found different plus what was written since the scan (the digests may have missed
// it), clipped by a truncate since.
TEST(ChangeLogTest, NarrowKeepsTheDifferingBlocksAndWhatWasWrittenSince) {
  ChangeLog log;
  Batch scan;
  for (uint64_t id : {1, 2, 3}) {
    FileChange f;
    f.ref = file(id);
    f.extents.add(0, 1 << 20);
    f.attrs = true;
    f.verify = true;
    scan.files.push_back(std::move(f));
  }
  log.replace(std::move(scan));
  auto verifying = log.verifying();
  ASSERT_EQ(verifying.size(), 3u);

  ExtentMap one_block;
  one_block.add(128 << 10, 128 << 10);
  log.write(file(2), 5, 1);               // written since the scan, outside the differing block
  log.truncate(file(3), 200 << 10);       // cut inside the differing block
  EXPECT_TRUE(log.narrow(1, one_block));
  EXPECT_TRUE(log.narrow(2, one_block));
  ExtentMap clipped = one_block;
  clipped.truncate(200 << 10);
  EXPECT_TRUE(log.narrow(3, clipped));
  EXPECT_FALSE(log.narrow(1, ExtentMap{})) << "narrowed twice";
  EXPECT_TRUE(log.verifying().empty());

  Batch b = log.take();
  std::map<uint64_t, std::map<uint64_t, uint64_t>> ranges;
  for (const auto& f : b.files) ranges[f.ref.id] = f.extents.ranges();
  EXPECT_EQ(ranges[1], (std::map<uint64_t, uint64_t>{{128 << 10, 256 << 10}}));
  EXPECT_EQ(ranges[2], (std::map<uint64_t, uint64_t>{{5, 6}, {128 << 10, 256 << 10}}));
  EXPECT_EQ(ranges[3], (std::map<uint64_t, uint64_t>{{128 << 10, 200 << 10}}));
}

// pending(): whether a ctime read now would vouch for content the receiver lacks (shipper.h).
TEST(ChangeLogTest, AFileIsPendingWhileTheLogHoldsAnyChangeOfIt) {
  ChangeLog log;
  EXPECT_FALSE(log.pending(7));
  log.write(file(7), 0, 10);
  EXPECT_TRUE(log.pending(7));
  Batch b = log.take();
  EXPECT_FALSE(log.pending(7)) << "taken: the batch carries it";
  log.attrs(file(7));
  EXPECT_TRUE(log.pending(7));
  log.take();
  {
    WriteInProgress writing(log, 7);  // performed on the source, not yet recorded
    EXPECT_TRUE(log.pending(7));
  }
  EXPECT_FALSE(log.pending(7));
  // A large file sliced over two batches: the first slice leaves the rest pending.
  log.write(file(8), 0, 4 << 20);
  Limits limits;
  limits.max_bytes = 1 << 20;
  Batch slice = log.take(limits);
  ASSERT_EQ(slice.files.size(), 1u);
  EXPECT_TRUE(log.pending(8));
}

}  // namespace
}  // namespace bkp::changes
