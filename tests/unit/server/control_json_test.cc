// The JSON backupd answers `list` and `status` with (docs/PROTOCOL.md "Control"): a volume
// carries its name and its node's address apart, and each replica its last error and when it
// happened, null when there is none; the Hub keeps that error until the replica acknowledges a
// batch again.
#include <gtest/gtest.h>

#include <cerrno>
#include <string>

#include "server/control_json.h"
#include "server/hub.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::server {
namespace {

constexpr int64_t kNow = 1795654923000;  // 2026-11-26T01:02:03Z

TEST(ControlJsonTest, AVolumeHasItsNameAndItsNodesAddress) {
  VolumeView view;
  view.reg = Registration{"web1", "10.0.0.7", 7701, "/srv/app", 300, kNow};
  json j = volume_json(view, kNow);
  EXPECT_EQ(j["host"], "web1");
  EXPECT_EQ(j["address"], "10.0.0.7");
  EXPECT_EQ(j["port"], 7701);
  EXPECT_EQ(j["path"], "/srv/app");
  EXPECT_EQ(j["registered_at"], "2026-11-26T01:02:03Z");
}

TEST(ControlJsonTest, AReplicaWithoutErrorHasNulls) {
  ReplicaStatus r;
  r.lag.replica = "r1";
  r.lag.connected = true;
  json j = replica_json(r, kNow);
  EXPECT_EQ(j["name"], "r1");
  EXPECT_TRUE(j["last_error"].is_null());
  EXPECT_TRUE(j["last_error_at"].is_null());
}

TEST(ControlJsonTest, AReplicaShowsItsLastErrorAndWhen) {
  ReplicaStatus r;
  r.lag.replica = "r2";
  r.lag.pending_ops = 8;
  r.last_error = ReplicaError{"replica reported: No space left on device", kNow};
  json j = replica_json(r, kNow);
  EXPECT_EQ(j["last_error"], "replica reported: No space left on device");
  EXPECT_EQ(j["last_error_at"], "2026-11-26T01:02:03Z");
  EXPECT_EQ(j["lag_ops"], 8);
  EXPECT_FALSE(j["connected"].get<bool>());
}

TEST(ReplicaErrorTest, KeptUntilTheReplicaAcknowledgesABatchAgain) {
  testutil::TempDir tmp("bkp-hub");
  Hub hub(tmp.path());
  hub.set_placement("web1:/srv/app", {"r1"});
  auto r = hub.attach_replica("r1");
  ASSERT_TRUE(r) << r.error().message;
  auto lags = hub.replica_lags("web1:/srv/app");
  ASSERT_EQ(lags.size(), 1u);
  EXPECT_FALSE(lags[0].last_error);

  (*r)->record_error(Error{ENOSPC, "replica reported: No space left on device"});
  hub.detach_replica(**r);
  lags = hub.replica_lags("web1:/srv/app");
  ASSERT_EQ(lags.size(), 1u);
  ASSERT_TRUE(lags[0].last_error);
  EXPECT_EQ(lags[0].last_error->message, "replica reported: No space left on device");
  EXPECT_GT(lags[0].last_error->at_ms, 0);
  EXPECT_EQ(lags[0].lag.replica, "r1");
  EXPECT_FALSE(lags[0].lag.connected);

  // It reconnects: the error stays until a batch is acknowledged.
  ASSERT_TRUE(hub.attach_replica("r1"));
  EXPECT_TRUE(hub.replica_lags("web1:/srv/app")[0].last_error);
  (*r)->clear_error();
  EXPECT_FALSE(hub.replica_lags("web1:/srv/app")[0].last_error);
}

}  // namespace
}  // namespace bkp::server
