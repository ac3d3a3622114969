// Hub (server/hub.h): a volume streams only to the replicas its copies are placed on, and
// rebaseline refuses to rebuild a replica's stream from a mirror that is half way through a
// node's baseline. The fault run found why: the scan then holds entries the node's sync-end is
// about to prune from the mirror, the replica's log gets that sync-end without its sync-begin,
// and the replica keeps the pruned entries for good.
#include "server/hub.h"

#include <gtest/gtest.h>

#include "tests/testutil/temp_dir.h"

namespace bkp::server {
namespace {

TEST(HubTest, NoReplicaReconcileWhileTheMirrorIsInsideANodeBaseline) {
  testutil::TempDir dir("bkp-hub");
  Hub hub(dir.path());
  auto volume = hub.volume("web1", "/srv/app");
  ASSERT_TRUE(volume) << volume.error().message;
  hub.set_placement("web1:/srv/app", {"r1"});
  auto replica = hub.attach_replica("r1");
  ASSERT_TRUE(replica) << replica.error().message;
  auto streams = (*replica)->streams();
  ASSERT_EQ(streams.size(), 1u);
  ReplicaStream& stream = *streams.front();

  wire::Op begin;
  begin.kind = wire::OpKind::kSyncBegin;
  {
    std::lock_guard lock((*volume)->mu);
    ASSERT_TRUE((*volume)->receiver->apply(begin));
  }
  EXPECT_TRUE(hub.mirror_syncing(stream));
  auto refused = hub.rebaseline(stream, changes::Manifest{});
  ASSERT_TRUE(refused) << refused.error().message;
  EXPECT_FALSE(refused->has_value());

  wire::Op end;
  end.kind = wire::OpKind::kSyncEnd;
  {
    std::lock_guard lock((*volume)->mu);
    ASSERT_TRUE((*volume)->receiver->apply(end));
  }
  EXPECT_FALSE(hub.mirror_syncing(stream));
  auto done = hub.rebaseline(stream, changes::Manifest{});
  ASSERT_TRUE(done) << done.error().message;
  EXPECT_TRUE(done->has_value());
  hub.detach_replica(**replica);
}

TEST(HubTest, AVolumeStreamsOnlyToTheReplicasItIsPlacedOn) {
  testutil::TempDir dir("bkp-hub");
  Hub hub(dir.path());
  hub.set_placement("web1:/srv/app", {"r1", "r3"});  // before the volume opens: kept for it
  auto r1 = hub.attach_replica("r1");
  auto r2 = hub.attach_replica("r2");
  ASSERT_TRUE(r1 && r2);
  auto volume = hub.volume("web1", "/srv/app");
  ASSERT_TRUE(volume) << volume.error().message;
  EXPECT_EQ((*r1)->streams().size(), 1u);
  EXPECT_EQ((*r2)->streams().size(), 0u) << "r2 holds no copy";

  // r3 was never seen: its copy is missing; r1 has its baseline to receive.
  auto lags = hub.replica_lags("web1:/srv/app");
  ASSERT_EQ(lags.size(), 2u);
  EXPECT_EQ(lags[0].lag.replica, "r1");
  EXPECT_EQ(lags[0].state, CopyState::kCatchingUp);
  EXPECT_EQ(lags[1].lag.replica, "r3");
  EXPECT_EQ(lags[1].state, CopyState::kMissing);

  // The copy moves from r1 to r2: r1's stream goes, r2 gets one.
  hub.set_placement("web1:/srv/app", {"r2"});
  EXPECT_EQ((*r1)->streams().size(), 0u);
  EXPECT_EQ((*r2)->streams().size(), 1u);
  EXPECT_EQ(hub.placement("web1:/srv/app"), std::set<std::string>{"r2"});
  hub.set_placement("web1:/srv/app", {});
  EXPECT_EQ((*r2)->streams().size(), 0u);
  EXPECT_TRUE(hub.replica_lags("web1:/srv/app").empty());
}

TEST(HubTest, UsageIsSmoothedAndOnlyTheFirstMeasuredOneIsNews) {
  testutil::TempDir dir("bkp-hub");
  Hub hub(dir.path());
  auto r = hub.attach_replica("r1");
  ASSERT_TRUE(r);
  EXPECT_FALSE((*r)->note_usage(wire::Usage{0, 0, 0, ""}, 8.0, "")) << "not measured yet";
  EXPECT_TRUE((*r)->note_usage(wire::Usage{1, 100, 200, "127.0.0.1:9"}, 4.0, "ID"));
  EXPECT_EQ((*r)->usage().restore_address, "127.0.0.1:9");
  EXPECT_EQ((*r)->usage().identity, "ID");
  EXPECT_FALSE((*r)->note_usage(wire::Usage{1, 150, 250, ""}, 12.0, "ID2"));
  ReplicaUsage u = (*r)->usage();
  EXPECT_EQ(u.restore_address, "") << "a restarted replicator without --listen serves nothing";
  EXPECT_EQ(u.identity, "ID2");
  EXPECT_TRUE(u.measured);
  EXPECT_EQ(u.stored_bytes, 150u);
  EXPECT_EQ(u.free_bytes, 250u);
  EXPECT_DOUBLE_EQ(u.rtt_ms, 8.0 + (4.0 - 8.0) / 4 + (12.0 - 7.0) / 4);
}

}  // namespace
}  // namespace bkp::server
