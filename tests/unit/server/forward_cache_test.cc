// ForwardCache (server/forward_cache.h): what a replica shipper finds is exactly a chunk the node
// sent and nothing has changed since, each chunk goes after its last expected take, and memory
// stays within its bound without evicting what lagging replicas ask for next, also across the
// volumes that share one budget.
#include "server/forward_cache.h"

#include <gtest/gtest.h>

#include <string>

namespace bkp::server {
namespace {

using namespace std::chrono_literals;

std::span<const uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string body_of(const std::shared_ptr<const wire::EncodedWrite>& c) {
  return c ? std::string(c->body.begin(), c->body.end()) : "<none>";
}

TEST(ForwardCacheTest, AChunkIsTakenOncePerReaderAsItWasPut) {
  ForwardCache cache;
  cache.put(1, 0, wire::kFlagZstd, 1000, bytes("zstd bytes"), 2);
  auto first = cache.take(1, 0, 1000);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->flags, wire::kFlagZstd);
  EXPECT_EQ(first->raw_length, 1000u);
  EXPECT_EQ(body_of(first), "zstd bytes");
  EXPECT_EQ(body_of(cache.take(1, 0, 1000)), "zstd bytes");
  EXPECT_FALSE(cache.take(1, 0, 1000));  // both readers had it
  EXPECT_EQ(cache.stats().kept_bytes, 0u);
  EXPECT_EQ(cache.stats().hit_bytes, 2000u);
  EXPECT_EQ(cache.stats().miss_bytes, 1000u);
}

TEST(ForwardCacheTest, OnlyTheExactChunkIsFound) {
  ForwardCache cache;
  cache.put(1, 4096, 0, 4, bytes("raw!"), 1);
  EXPECT_FALSE(cache.take(1, 4096, 3));  // a shorter piece of it: read from the mirror
  EXPECT_FALSE(cache.take(1, 0, 4));
  EXPECT_FALSE(cache.take(2, 4096, 4));
  EXPECT_EQ(body_of(cache.take(1, 4096, 4)), "raw!");
}

TEST(ForwardCacheTest, AWriteReplacesEveryChunkItOverlapsAndNoOther) {
  ForwardCache cache;
  cache.put(1, 0, 0, 100, bytes("a"), 1);
  cache.put(1, 100, 0, 100, bytes("b"), 1);
  cache.put(1, 200, 0, 100, bytes("c"), 1);
  cache.put(1, 300, 0, 100, bytes("d"), 1);
  cache.put(2, 150, 0, 100, bytes("other file"), 1);
  cache.put(1, 150, 0, 100, bytes("new"), 1);  // overlaps b and c
  EXPECT_EQ(body_of(cache.take(1, 0, 100)), "a");
  EXPECT_FALSE(cache.take(1, 100, 100));
  EXPECT_FALSE(cache.take(1, 200, 100));
  EXPECT_EQ(body_of(cache.take(1, 300, 100)), "d");
  EXPECT_EQ(body_of(cache.take(1, 150, 100)), "new");
  EXPECT_EQ(body_of(cache.take(2, 150, 100)), "other file");
}

TEST(ForwardCacheTest, ATruncateOrCreateForgetsTheWholeFile) {
  ForwardCache cache;
  cache.put(1, 0, 0, 10, bytes("x"), 1);
  cache.put(1, 1 << 30, 0, 10, bytes("y"), 1);
  cache.put(2, 0, 0, 10, bytes("z"), 1);
  cache.drop_file(1);
  EXPECT_FALSE(cache.take(1, 0, 10));
  EXPECT_FALSE(cache.take(1, 1 << 30, 10));
  EXPECT_EQ(body_of(cache.take(2, 0, 10)), "z");
}

TEST(ForwardCacheTest, NothingIsKeptWithoutReaders) {
  ForwardCache cache;
  cache.put(1, 0, 0, 10, bytes("x"), 0);
  EXPECT_FALSE(cache.take(1, 0, 10));
  EXPECT_EQ(cache.stats().kept_bytes, 0u);
}

TEST(ForwardCacheTest, WhenFullFreshChunksStayAndNewOnesAreNotKept) {
  ForwardCache cache(8, 1h);
  cache.put(1, 0, 0, 4, bytes("aaaa"), 1);
  cache.put(1, 4, 0, 4, bytes("bbbb"), 1);
  cache.put(1, 8, 0, 4, bytes("cccc"), 1);  // no room: the lagging reader wants a and b first
  EXPECT_EQ(cache.stats().kept_bytes, 8u);
  EXPECT_FALSE(cache.take(1, 8, 4));
  EXPECT_EQ(body_of(cache.take(1, 0, 4)), "aaaa");
  cache.put(1, 12, 0, 4, bytes("dddd"), 1);  // a's room is free again
  EXPECT_EQ(body_of(cache.take(1, 12, 4)), "dddd");
}

TEST(ForwardCacheTest, WhenFullStaleChunksMakeRoomOldestFirst) {
  ForwardCache cache(8, 0ms);  // every chunk is stale at once
  cache.put(1, 0, 0, 4, bytes("aaaa"), 1);
  cache.put(1, 4, 0, 4, bytes("bbbb"), 1);
  cache.put(1, 8, 0, 4, bytes("cccc"), 1);
  EXPECT_FALSE(cache.take(1, 0, 4));
  EXPECT_EQ(body_of(cache.take(1, 4, 4)), "bbbb");
  EXPECT_EQ(body_of(cache.take(1, 8, 4)), "cccc");
  cache.put(1, 12, 0, 9, bytes("too large"), 1);  // larger than the whole bound
  EXPECT_FALSE(cache.take(1, 12, 9));
}

TEST(ForwardCacheTest, VolumesShareOneBudgetAndFreshChunksAreNotShedForOthers) {
  auto budget = std::make_shared<ForwardBudget>(8);
  {
    ForwardCache a(8, 1h, budget), b(8, 1h, budget);
    a.put(1, 0, 0, 4, bytes("aaaa"), 1);
    a.put(1, 4, 0, 4, bytes("bbbb"), 1);
    b.put(2, 0, 0, 4, bytes("cccc"), 1);  // within b's own bound, but the budget is spent
    EXPECT_FALSE(b.take(2, 0, 4));
    EXPECT_EQ(budget->used(), 8u);
    EXPECT_EQ(body_of(a.take(1, 0, 4)), "aaaa");  // taken: its bytes go back to the budget
    EXPECT_EQ(budget->used(), 4u);
    b.put(2, 0, 0, 4, bytes("cccc"), 1);
    EXPECT_EQ(body_of(b.take(2, 0, 4)), "cccc");
  }
  EXPECT_EQ(budget->used(), 0u) << "a cache gone gives back what it kept";
}

TEST(ForwardCacheTest, AFullBudgetShedsOtherVolumesStaleChunks) {
  auto budget = std::make_shared<ForwardBudget>(8);
  ForwardCache idle(8, 0ms, budget);  // its chunks are stale at once (a replica away)
  ForwardCache busy(8, 1h, budget);
  idle.put(1, 0, 0, 4, bytes("aaaa"), 1);
  idle.put(1, 4, 0, 4, bytes("bbbb"), 1);
  busy.put(2, 0, 0, 8, bytes("cccccccc"), 1);
  EXPECT_EQ(body_of(busy.take(2, 0, 8)), "cccccccc");
  EXPECT_FALSE(idle.take(1, 0, 4)) << "shed for the busy volume";
  EXPECT_EQ(idle.stats().kept_bytes, 0u);
}

}  // namespace
}  // namespace bkp::server
