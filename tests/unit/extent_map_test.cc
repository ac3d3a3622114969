// ExtentMap: dirty ranges merge with every neighbour they overlap or touch, truncate clips, and
// the map never holds more entries than there are disjoint, non-adjacent ranges.
#include "common/changes/extent_map.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace bkp::changes {
namespace {

// "[0,10) [20,30)": the map as a value, so a failing expectation shows the whole state.
std::string show(const ExtentMap& m) {
  std::string s;
  for (const auto& [start, end] : m.ranges()) {
    if (!s.empty()) s += ' ';
    s += "[" + std::to_string(start) + "," + std::to_string(end) + ")";
  }
  return s;
}

ExtentMap map_of(std::initializer_list<std::pair<uint64_t, uint64_t>> adds) {
  ExtentMap m;
  for (auto [offset, length] : adds) m.add(offset, length);
  return m;
}

TEST(ExtentMapTest, StartsEmpty) {
  ExtentMap m;
  EXPECT_TRUE(m.empty());
  EXPECT_EQ(m.range_count(), 0u);
  EXPECT_EQ(m.total_bytes(), 0u);
  EXPECT_EQ(show(m), "");
}

TEST(ExtentMapTest, DisjointRangesStaySeparate) {
  ExtentMap m = map_of({{20, 10}, {0, 10}});
  EXPECT_EQ(show(m), "[0,10) [20,30)");
  EXPECT_EQ(m.total_bytes(), 20u);
}

TEST(ExtentMapTest, AdjacentRangesMerge) {
  EXPECT_EQ(show(map_of({{0, 10}, {10, 5}})), "[0,15)");
  EXPECT_EQ(show(map_of({{10, 5}, {0, 10}})), "[0,15)");
  EXPECT_EQ(show(map_of({{0, 10}, {20, 10}, {10, 10}})), "[0,30)");
}

TEST(ExtentMapTest, OverlappingRangesMerge) {
  EXPECT_EQ(show(map_of({{0, 10}, {5, 10}})), "[0,15)");
  EXPECT_EQ(show(map_of({{5, 10}, {0, 10}})), "[0,15)");
}

TEST(ExtentMapTest, OneRangeSwallowsSeveral) {
  ExtentMap m = map_of({{0, 10}, {20, 10}, {40, 10}, {60, 10}});
  m.add(5, 40);  // [5,45): overlaps the first three
  EXPECT_EQ(show(m), "[0,50) [60,70)");
  EXPECT_EQ(m.range_count(), 2u);
}

TEST(ExtentMapTest, ContainedRangeChangesNothing) {
  ExtentMap m = map_of({{0, 100}});
  m.add(10, 5);
  m.add(0, 100);
  m.add(99, 1);
  EXPECT_EQ(show(m), "[0,100)");
}

TEST(ExtentMapTest, RangeInAGapKeepsBothNeighbours) {
  ExtentMap m = map_of({{0, 10}, {30, 10}});
  m.add(15, 5);
  EXPECT_EQ(show(m), "[0,10) [15,20) [30,40)");
}

TEST(ExtentMapTest, ZeroLengthWriteDirtiesNothing) {
  ExtentMap m;
  m.add(5, 0);
  EXPECT_TRUE(m.empty());
  m.add(0, 5);
  m.add(5, 0);
  EXPECT_EQ(show(m), "[0,5)");
}

TEST(ExtentMapTest, HotRegionRewrittenManyTimesIsOneRange) {
  ExtentMap m;
  for (int i = 0; i < 100000; ++i) m.add(4096 + (i % 64) * 512, 512);
  EXPECT_EQ(show(m), "[4096,36864)");
}

TEST(ExtentMapTest, TruncateDropsRangesBeyondSize) {
  ExtentMap m = map_of({{0, 10}, {20, 10}, {40, 10}});
  m.truncate(30);
  EXPECT_EQ(show(m), "[0,10) [20,30)");
  m.truncate(20);
  EXPECT_EQ(show(m), "[0,10)");
}

TEST(ExtentMapTest, TruncateSplitsAStraddlingRange) {
  ExtentMap m = map_of({{0, 10}, {20, 10}});
  m.truncate(25);
  EXPECT_EQ(show(m), "[0,10) [20,25)");
  EXPECT_EQ(m.total_bytes(), 15u);
}

TEST(ExtentMapTest, TruncateToZeroEmpties) {
  ExtentMap m = map_of({{0, 10}, {20, 10}});
  m.truncate(0);
  EXPECT_TRUE(m.empty());
}

TEST(ExtentMapTest, TruncateBeyondEndChangesNothing) {
  ExtentMap m = map_of({{0, 10}});
  m.truncate(1000);
  EXPECT_EQ(show(m), "[0,10)");
}

TEST(ExtentMapTest, WriteAfterTruncateStartsANewRange) {
  ExtentMap m = map_of({{0, 100}});
  m.truncate(10);
  m.add(200, 10);
  EXPECT_EQ(show(m), "[0,10) [200,210)");
}

TEST(ExtentMapTest, MergeUnitesTwoMaps) {
  ExtentMap a = map_of({{0, 10}, {30, 10}});
  ExtentMap b = map_of({{10, 10}, {35, 15}, {100, 1}});
  a.merge(b);
  EXPECT_EQ(show(a), "[0,20) [30,50) [100,101)");
  EXPECT_EQ(show(b), "[10,20) [35,50) [100,101)");  // the source is unchanged
}

TEST(ExtentMapTest, MergeIntoEmptyCopies) {
  ExtentMap a;
  a.merge(map_of({{5, 5}}));
  EXPECT_EQ(show(a), "[5,10)");
}

TEST(ExtentMapTest, ClearEmpties) {
  ExtentMap m = map_of({{0, 10}});
  m.clear();
  EXPECT_TRUE(m.empty());
}

TEST(ExtentMapTest, HugeOffsets) {
  ExtentMap m;
  uint64_t big = uint64_t{1} << 62;
  m.add(big, 4096);
  m.add(big + 4096, 4096);
  ASSERT_EQ(m.range_count(), 1u);
  EXPECT_EQ(m.ranges().begin()->first, big);
  EXPECT_EQ(m.ranges().begin()->second, big + 8192);
}

// Random adds, truncates, merges and removals against a byte-per-byte model; after every step the map
// must hold exactly the model's dirty bytes as disjoint, non-adjacent, non-empty ranges.
TEST(ExtentMapTest, MatchesABitmapModel) {
  constexpr uint64_t kSpace = 2048;
  std::mt19937_64 rng(42);
  ExtentMap m;
  std::vector<bool> model(kSpace, false);
  for (int step = 0; step < 5000; ++step) {
    int what = static_cast<int>(rng() % 12);
    if (what >= 10) {
      uint64_t off = rng() % kSpace;
      uint64_t len = rng() % std::min<uint64_t>(96, kSpace - off);
      m.remove(off, len);
      for (uint64_t i = off; i < off + len; ++i) model[i] = false;
    } else if (what < 7) {
      uint64_t off = rng() % kSpace;
      uint64_t len = rng() % std::min<uint64_t>(64, kSpace - off);
      m.add(off, len);
      for (uint64_t i = off; i < off + len; ++i) model[i] = true;
    } else if (what < 9) {
      ExtentMap other;
      uint64_t off = rng() % kSpace;
      uint64_t len = rng() % std::min<uint64_t>(32, kSpace - off);
      other.add(off, len);
      m.merge(other);
      for (uint64_t i = off; i < off + len; ++i) model[i] = true;
    } else {
      uint64_t size = rng() % (kSpace + 1);
      m.truncate(size);
      for (uint64_t i = size; i < kSpace; ++i) model[i] = false;
    }

    std::vector<bool> seen(kSpace, false);
    uint64_t prev_end = 0;
    bool first = true;
    uint64_t total = 0;
    for (const auto& [start, end] : m.ranges()) {
      ASSERT_LT(start, end) << "empty range at step " << step;
      ASSERT_LE(end, kSpace) << "range beyond anything written at step " << step;
      if (!first) {
        ASSERT_GT(start, prev_end) << "adjacent or overlapping ranges: " << show(m);
      }
      first = false;
      prev_end = end;
      total += end - start;
      for (uint64_t i = start; i < end; ++i) seen[i] = true;
    }
    ASSERT_EQ(seen, model) << "step " << step << ": " << show(m);
    ASSERT_EQ(m.total_bytes(), total);
    ASSERT_EQ(m.empty(), total == 0);
  }
}

}  // namespace
}  // namespace bkp::changes
