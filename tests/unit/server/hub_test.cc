// Hub::rebaseline (server/hub.h) refuses to rebuild a replica's stream from a mirror that is
// half way through a node's baseline. The fault run found why: the scan then holds entries the
// node's sync-end is about to prune from the mirror, the replica's log gets that sync-end without
// its sync-begin, and the replica keeps the pruned entries for good.
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

}  // namespace
}  // namespace bkp::server
