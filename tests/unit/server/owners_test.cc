// preferred_owner (server/owners.h): every server agrees, the volumes spread over the servers,
// and a server joining or leaving moves only the volumes it wins or held.
#include "server/owners.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace bkp::server {
namespace {

std::map<std::string, std::string> owners(const std::vector<std::string>& servers, int volumes) {
  std::map<std::string, std::string> out;
  for (int i = 0; i < volumes; ++i) {
    std::string key = "web" + std::to_string(i) + ":/srv/app";
    out[key] = preferred_owner(key, servers);
  }
  return out;
}

TEST(OwnersTest, NoServerNoOwnerAndTheOrderOfTheListDoesNotMatter) {
  EXPECT_EQ(preferred_owner("web1:/srv", {}), "");
  EXPECT_EQ(owners({"a", "b", "c"}, 100), owners({"c", "a", "b"}, 100));
}

TEST(OwnersTest, VolumesSpreadOverTheServers) {
  std::map<std::string, int> count;
  for (const auto& [key, owner] : owners({"a", "b", "c"}, 3000)) ++count[owner];
  ASSERT_EQ(count.size(), 3u);
  for (const auto& [server, n] : count) {
    EXPECT_GT(n, 800) << server;  // 1000 each on average
    EXPECT_LT(n, 1200) << server;
  }
}

TEST(OwnersTest, AServerJoiningTakesOnlyWhatItWinsAndOneLeavingGivesOnlyItsOwn) {
  auto before = owners({"a", "b", "c"}, 3000);
  auto joined = owners({"a", "b", "c", "d"}, 3000);
  int moved = 0;
  for (const auto& [key, owner] : joined) {
    if (owner != before[key]) {
      ++moved;
      EXPECT_EQ(owner, "d") << key << " moved between two servers that stayed";
    }
  }
  EXPECT_GT(moved, 600);  // about a quarter
  EXPECT_LT(moved, 900);

  auto left = owners({"a", "c"}, 3000);
  for (const auto& [key, owner] : left) {
    if (before[key] != "b") {
      EXPECT_EQ(owner, before[key]) << key << " moved though its server stayed";
    }
  }
}

}  // namespace
}  // namespace bkp::server
