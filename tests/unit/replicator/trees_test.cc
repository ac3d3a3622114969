// Trees (replicator/trees.h): a volume selected by another session (its server took it over)
// moves to that session, and the session that held it can no longer write it; a session's end
// releases only its own trees; a dropped tree refuses its session and opens afresh.
#include "replicator/trees.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "tests/testutil/temp_dir.h"

namespace bkp::replicator {
namespace {

class TreesTest : public ::testing::Test {
 protected:
  testutil::TempDir root{"bkp-trees"};
  Monitor monitor{root.path(), {}};
  Trees trees{root.path(), nullptr, monitor};

  // Whether session may write the tree now; its refusal's message otherwise.
  std::string refusal(Trees::Selected selected, uint64_t session) {
    auto use = trees.use(selected, session);
    if (use) return "";
    EXPECT_EQ(use.error().code, ESTALE) << use.error().message;
    return use.error().message;
  }
};

TEST_F(TreesTest, ASelectFromAnotherSessionTakesTheTree) {
  auto first = trees.select("web1", "/srv/app", 1, "10.0.0.1:7700");
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_EQ(refusal(*first, 1), "");
  EXPECT_EQ(trees.use(*first, 1).value()->server, "10.0.0.1:7700");

  auto second = trees.select("web1", "/srv/app", 2, "10.0.0.2:7700");
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(*second, *first) << "one tree per volume, whichever server selects it";
  const std::string why = refusal(*first, 1);
  EXPECT_EQ(why.find("moved: "), 0u) << why;  // the session names the volume in front
  EXPECT_NE(why.find("10.0.0.2:7700"), std::string::npos) << why;
  EXPECT_EQ(refusal(*second, 2), "");
  EXPECT_EQ(trees.use(*second, 2).value()->server, "10.0.0.2:7700") << "the display names it";

  trees.release(1);  // the first session ends: the tree it lost stays the second's
  EXPECT_EQ(refusal(*second, 2), "");
}

TEST_F(TreesTest, TwoSessionsWriteTwoVolumesAtOnce) {
  auto a = trees.select("web1", "/srv/a", 1, "10.0.0.1:7700");
  auto b = trees.select("web2", "/srv/b", 2, "10.0.0.2:7700");
  ASSERT_TRUE(a && b);
  EXPECT_NE(*a, *b);
  auto use_a = trees.use(*a, 1);
  auto use_b = trees.use(*b, 2);  // while use_a holds its tree
  ASSERT_TRUE(use_a && use_b);
  EXPECT_NE((*use_a)->applier->tree_fd(), (*use_b)->applier->tree_fd());
}

TEST_F(TreesTest, ADroppedTreeRefusesItsSessionAndOpensAfresh) {
  auto selected = trees.select("web1", "/srv/app", 1, "10.0.0.1:7700");
  ASSERT_TRUE(selected);
  ASSERT_EQ(::access((root.path() + "/web1/srv-app").c_str(), F_OK), 0);
  ASSERT_TRUE(trees.drop(wire::Drop{"web1", "/srv/app", 1}));
  EXPECT_NE(refusal(*selected, 1).find("was dropped"), std::string::npos);
  EXPECT_EQ(::access((root.path() + "/web1/srv-app").c_str(), F_OK), -1) << "purged";

  auto again = trees.select("web1", "/srv/app", 2, "10.0.0.2:7700");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(refusal(*again, 2), "");
  EXPECT_EQ(trees.use(*again, 2).value()->receiver->committed(), 0u) << "a fresh tree";
}

}  // namespace
}  // namespace bkp::replicator
