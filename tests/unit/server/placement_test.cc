// The placement score (server/placement.h), on figures computed by hand: latency and stored
// bytes weigh 50/50 after each is divided by its maximum among the candidates with room.
#include "server/placement.h"

#include <gtest/gtest.h>

namespace bkp::server {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

std::vector<std::string> names(const std::vector<Scored>& ranked) {
  std::vector<std::string> out;
  for (const auto& s : ranked) out.push_back(s.name);
  return out;
}

TEST(PlacementTest, NearAndEmptyBeatsFarOrFull) {
  // a: 1 ms, 0 B       -> 0.5*1/41 + 0          = 0.0122
  // b: 1 ms, 40 GiB    -> 0.5*1/41 + 0.5*1      = 0.5122
  // c: 41 ms, 10 GiB   -> 0.5*1    + 0.5*0.25   = 0.625
  // d: 21 ms, 0 B      -> 0.5*21/41             = 0.2561
  std::vector<Candidate> c{{"a", 1, 0, 100 * kGiB},
                           {"b", 1, 40 * kGiB, 100 * kGiB},
                           {"c", 41, 10 * kGiB, 100 * kGiB},
                           {"d", 21, 0, 100 * kGiB}};
  auto ranked = rank(c, 0);
  EXPECT_EQ(names(ranked), (std::vector<std::string>{"a", "d", "b", "c"}));
  ASSERT_EQ(ranked.size(), 4u);
  EXPECT_NEAR(ranked[0].score, 0.5 / 41, 1e-9);
  EXPECT_NEAR(ranked[1].score, 0.5 * 21 / 41, 1e-9);
  EXPECT_NEAR(ranked[2].score, 0.5 / 41 + 0.5, 1e-9);
  EXPECT_NEAR(ranked[3].score, 0.5 + 0.125, 1e-9);
}

TEST(PlacementTest, LatencyAndBytesWeighTheSame) {
  // x is twice as far, y holds twice as much: 0.5*1 + 0.5*0.5 against 0.5*0.5 + 0.5*1.
  std::vector<Candidate> c{{"y", 10, 2 * kGiB, 100 * kGiB}, {"x", 20, kGiB, 100 * kGiB}};
  auto ranked = rank(c, 0);
  ASSERT_EQ(ranked.size(), 2u);
  EXPECT_DOUBLE_EQ(ranked[0].score, ranked[1].score);
  EXPECT_EQ(names(ranked), (std::vector<std::string>{"x", "y"})) << "a tie goes to the smaller name";
}

TEST(PlacementTest, AReplicatorWithoutRoomIsNeverChosen) {
  // "full" has 10 GiB free, the volume needs 10 GiB (and kMinFreeBytes more); "tight" exactly
  // enough. Leaving "full" out also changes the maxima the others are divided by.
  std::vector<Candidate> c{{"full", 1, 0, 10 * kGiB},
                           {"tight", 30, 5 * kGiB, 10 * kGiB + kMinFreeBytes},
                           {"roomy", 10, 0, 100 * kGiB}};
  auto ranked = rank(c, 10 * kGiB);
  EXPECT_EQ(names(ranked), (std::vector<std::string>{"roomy", "tight"}));
  EXPECT_NEAR(ranked[0].score, 0.5 * 10 / 30, 1e-9);
  EXPECT_NEAR(ranked[1].score, 1.0, 1e-9);
  EXPECT_TRUE(rank({{"full", 1, 0, 0}}, 0).empty()) << "no room at all";
}

TEST(PlacementTest, AllZeroFiguresCountZero) {
  auto ranked = rank({{"b", 0, 0, 100 * kGiB}, {"a", 0, 0, 100 * kGiB}}, 0);
  ASSERT_EQ(ranked.size(), 2u);
  EXPECT_EQ(ranked[0].score, 0);
  EXPECT_EQ(names(ranked), (std::vector<std::string>{"a", "b"}));
}

}  // namespace
}  // namespace bkp::server
