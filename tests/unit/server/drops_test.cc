// DropQueue (server/drops.h): a drop outlives backupd until its replica confirms it, goes to
// every replica that ever connected, a purge is never weakened by a plain drop (nor forgotten
// because a plain drop sent before it was confirmed), and a refused drop stays queued; with the
// catalog on either engine (catalog_engine.h).
#include "server/drops.h"

#include <gtest/gtest.h>

#include "tests/unit/server/catalog_engine.h"

namespace bkp::server {
namespace {

using namespace std::chrono_literals;

class DropQueueTest : public CatalogEngineTest {
 protected:
  void SetUp() override {
    CatalogEngineTest::SetUp();
    if (!IsSkipped() && !HasFatalFailure()) reopen();
  }

  // A new queue over the same catalog, as after a restart of backupd.
  void reopen() {
    queue_.reset();
    catalog_.reset();
    auto c = Catalog::open(where());
    ASSERT_TRUE(c) << c.error().message;
    catalog_ = std::move(*c);
    queue_ = std::make_unique<DropQueue>(*catalog_);
    ASSERT_TRUE(queue_->load());
  }

  // "host:path purge" of each pending drop of the replica.
  std::vector<std::string> pending(const std::string& replica) {
    std::vector<std::string> out;
    for (const auto& d : queue_->pending(replica)) {
      out.push_back(d.host + ":" + d.path + (d.purge == Purge::kYes ? " purge" : " close"));
    }
    return out;
  }

  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<DropQueue> queue_;
};

TEST_P(DropQueueTest, ADropWaitsForItsReplicaAcrossARestart) {
  ASSERT_TRUE(queue_->note_replica("r1"));
  ASSERT_TRUE(queue_->note_replica("r2"));
  auto queued = queue_->queue("web1", "/srv/app", Purge::kYes);
  ASSERT_TRUE(queued) << queued.error().message;
  EXPECT_EQ(*queued, (std::vector<std::string>{"r1", "r2"}));

  reopen();
  EXPECT_EQ(pending("r1"), std::vector<std::string>{"web1:/srv/app purge"});
  ASSERT_TRUE(queue_->done("r1", queue_->pending("r1").front()));
  EXPECT_EQ(pending("r1"), std::vector<std::string>{});

  reopen();
  EXPECT_EQ(pending("r1"), std::vector<std::string>{});
  EXPECT_EQ(pending("r2"), std::vector<std::string>{"web1:/srv/app purge"});
  // A replica first seen after the drop never held the volume: it gets nothing.
  ASSERT_TRUE(queue_->note_replica("r3"));
  EXPECT_EQ(pending("r3"), std::vector<std::string>{});
}

TEST_P(DropQueueTest, APurgeQueuedWhileACloseIsInFlightStaysQueued) {
  ASSERT_TRUE(queue_->note_replica("r1"));
  ASSERT_TRUE(queue_->queue("web1", "/srv/app", Purge::kNo));
  PendingDrop sent = queue_->pending("r1").front();  // the session sends the close...
  ASSERT_TRUE(queue_->queue("web1", "/srv/app", Purge::kYes));  // ...and a purge comes in
  ASSERT_TRUE(queue_->done("r1", sent));
  EXPECT_EQ(pending("r1"), std::vector<std::string>{"web1:/srv/app purge"});
  ASSERT_TRUE(queue_->queue("web1", "/srv/app", Purge::kNo));  // never weakens it
  reopen();
  EXPECT_EQ(pending("r1"), std::vector<std::string>{"web1:/srv/app purge"});
}

TEST_P(DropQueueTest, WaitReportsDoneFailedAndUnanswered) {
  for (const char* r : {"r1", "r2", "r3"}) ASSERT_TRUE(queue_->note_replica(r));
  ASSERT_TRUE(queue_->queue("web1", "/srv/app", Purge::kYes));
  ASSERT_TRUE(queue_->done("r1", queue_->pending("r1").front()));
  queue_->failed("r2", queue_->pending("r2").front(), "delete x: Permission denied");
  auto answers = queue_->wait("web1", "/srv/app", {"r1", "r2", "r3"}, 50ms);
  EXPECT_FALSE(answers["r1"].has_value());
  ASSERT_TRUE(answers["r2"].has_value());
  EXPECT_EQ(answers["r2"]->error, "delete x: Permission denied");
  ASSERT_TRUE(answers["r3"].has_value());
  EXPECT_EQ(answers["r3"]->error, "");
  // A refused drop is still queued, to be sent again at the replica's next connection.
  EXPECT_EQ(pending("r2"), std::vector<std::string>{"web1:/srv/app purge"});
}

INSTANTIATE_TEST_SUITE_P(, DropQueueTest, kCatalogEngines, catalog_engine_name);

}  // namespace
}  // namespace bkp::server
