// bkptool's "did you mean": the edit distance counts a swapped pair as one typo, and a command
// is suggested only when it is near enough to be what was meant.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tools/suggest.h"

namespace bkp::tools {
namespace {

const std::vector<std::string> kCommands = {"register", "unregister", "list",    "history",
                                            "snapshots", "restore",   "status",  "replica",
                                            "operator"};

std::string suggestion(std::string_view typed) {
  return nearest(typed, kCommands).value_or("(none)");
}

TEST(EditDistanceTest, CountsEachKindOfTypoOnce) {
  EXPECT_EQ(edit_distance("history", "history"), 0u);
  EXPECT_EQ(edit_distance("histroy", "history"), 1u) << "a swap of neighbours";
  EXPECT_EQ(edit_distance("histry", "history"), 1u) << "a letter left out";
  EXPECT_EQ(edit_distance("hisstory", "history"), 1u) << "a letter doubled";
  EXPECT_EQ(edit_distance("hostory", "history"), 1u) << "a wrong letter";
  EXPECT_EQ(edit_distance("HISTORY", "history"), 0u) << "case is not a typo";
  EXPECT_EQ(edit_distance("", "list"), 4u);
  EXPECT_EQ(edit_distance("list", ""), 4u);
  EXPECT_EQ(edit_distance("ca", "abc"), 3u) << "optimal string alignment edits no swap twice";
}

TEST(EditDistanceTest, IsSymmetric) {
  for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"restroe", "restore"}, {"snapshtos", "snapshots"}, {"regsiter", "unregister"}}) {
    EXPECT_EQ(edit_distance(a, b), edit_distance(b, a)) << a << " / " << b;
  }
}

TEST(NearestTest, SuggestsTheCommandMeant) {
  EXPECT_EQ(suggestion("histroy"), "history");
  EXPECT_EQ(suggestion("lsit"), "list");
  EXPECT_EQ(suggestion("lst"), "list");
  EXPECT_EQ(suggestion("restroe"), "restore");
  EXPECT_EQ(suggestion("snapshot"), "snapshots");
  EXPECT_EQ(suggestion("regster"), "register");
  EXPECT_EQ(suggestion("Status"), "status");
  EXPECT_EQ(suggestion("replicas"), "replica");
}

TEST(NearestTest, NothingWhenNoCommandIsNearEnough) {
  EXPECT_EQ(suggestion("backup"), "(none)");
  EXPECT_EQ(suggestion("x"), "(none)");
  EXPECT_EQ(suggestion("ls"), "(none)") << "two edits in a two-letter word is another word";
  EXPECT_EQ(suggestion("hzzory"), "(none)") << "three edits in six letters";
  EXPECT_EQ(suggestion("hstroy"), "history") << "two in six";
  EXPECT_EQ(suggestion(""), "(none)");
  EXPECT_FALSE(nearest("list", {}));
}

TEST(NearestTest, ATieGoesToTheFirstCandidate) {
  EXPECT_EQ(nearest("cat", {"bat", "cut"}).value_or(""), "bat");
  EXPECT_EQ(nearest("cat", {"cut", "bat"}).value_or(""), "cut");
}

}  // namespace
}  // namespace bkp::tools
