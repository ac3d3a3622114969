// ManifestAsks (server/manifest_asks.h): a verify waiting on a replica always gets an answer:
// the session's, the error of a session that ended (fail_all), or ECONNRESET for an ask the
// session dropped half way; asks put back keep their order ahead of newer ones.
#include "server/manifest_asks.h"

#include <gtest/gtest.h>

namespace bkp::server {
namespace {

TEST(ManifestAsksTest, EveryAskIsAnsweredOnceWhateverHappensToIt) {
  ManifestAsks asks;
  auto answered = asks.post("h:/a", 1, false);
  auto dropped = asks.post("h:/b", 0, true);
  auto taken = asks.take();
  ASSERT_EQ(taken.size(), 2u);
  EXPECT_EQ(taken[0]->volume, "h:/a");
  EXPECT_EQ(taken[0]->flags, 1);
  EXPECT_TRUE(taken[1]->when_current);
  changes::Manifest m;
  m.emplace("", wire::ManifestEntry{});
  taken[0]->answer(AskedManifest{m, true});
  taken.clear();  // the second dropped unanswered, as by a session that failed
  auto a = answered.get();
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->current);
  EXPECT_EQ(a->manifest.size(), 1u);
  auto d = dropped.get();
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, ECONNRESET);
}

TEST(ManifestAsksTest, PutBackAsksComeFirstAndASessionEndFailsThemAll) {
  ManifestAsks asks;
  auto first = asks.post("h:/a", 0, true);
  asks.put_back(asks.take());
  auto second = asks.post_snapshots("h:/b");
  auto order = asks.take();
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0]->volume, "h:/a");
  EXPECT_FALSE(order[0]->snapshots);
  EXPECT_TRUE(order[1]->snapshots);
  asks.put_back(std::move(order));
  asks.fail_all(Error{EPIPE, "replica r1 disconnected"});
  EXPECT_TRUE(asks.take().empty());
  for (auto* f : {&first, &second}) {
    auto r = f->get();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message, "replica r1 disconnected");
  }
}

}  // namespace
}  // namespace bkp::server
