// The authorisation decisions of backupd's TCP port (server/peer_gate.h), without a network:
// only an identity added as that kind is admitted, one identity has one role, a bad id or name
// is a bad_request, removing an unknown identity is unknown_peer, removal shuts the open
// sessions of that identity (and only those) down, and the pending list is escaped, deduplicated,
// cleared by add and bounded; with the catalog on either engine (catalog_engine.h).
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <fmt/format.h>

#include <string>

#include "common/unique_fd.h"
#include "server/control_json.h"
#include "server/peer_gate.h"
#include "tests/unit/server/catalog_engine.h"

namespace bkp::server {
namespace {

// Two well-formed identities (52 base32 characters).
const std::string kA = "AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA";
const std::string kB = "BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB-BBBB";

class PeerGateTest : public CatalogEngineTest {
 protected:
  void SetUp() override {
    CatalogEngineTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto c = Catalog::open(where());
    ASSERT_TRUE(c) << c.error().message;
    catalog_ = std::move(*c);
    gate_ = std::make_unique<PeerGate>(*catalog_);
  }

  bool admitted(PeerKind kind, const std::string& id) {
    auto s = gate_->admit(kind, id, -1);
    EXPECT_TRUE(s) << s.error().message;
    return s && s->has_value();
  }

  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<PeerGate> gate_;
};

TEST_P(PeerGateTest, OnlyAnIdentityAddedAsThatKindIsAdmitted) {
  EXPECT_FALSE(admitted(PeerKind::kReplica, kA));
  ASSERT_TRUE(gate_->add(PeerKind::kReplica, kA, "r1", 1000));
  EXPECT_TRUE(admitted(PeerKind::kReplica, kA));
  EXPECT_FALSE(admitted(PeerKind::kOperator, kA));
  EXPECT_FALSE(admitted(PeerKind::kReplica, kB));
  auto list = gate_->list(PeerKind::kReplica);
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ(peer_json((*list)[0])["name"], "r1");
}

TEST_P(PeerGateTest, RefusalsHaveTheirCodes) {
  ASSERT_TRUE(gate_->add(PeerKind::kReplica, kA, "", 1000));
  EXPECT_EQ(gate_->add(PeerKind::kReplica, kA, "", 1000).error().fault, Fault::kDuplicate);
  auto other_role = gate_->add(PeerKind::kOperator, kA, "", 1000);
  ASSERT_FALSE(other_role);
  EXPECT_EQ(other_role.error().fault, Fault::kDuplicate);
  EXPECT_NE(other_role.error().message.find("already authorised as a replica"), std::string::npos);
  EXPECT_EQ(gate_->add(PeerKind::kOperator, "nonsense", "", 1000).error().fault, Fault::kBadRequest);
  EXPECT_EQ(gate_->add(PeerKind::kOperator, kB, "a\nb", 1000).error().fault, Fault::kBadRequest);
  EXPECT_EQ(gate_->add(PeerKind::kOperator, kB, std::string(65, 'n'), 1000).error().fault,
            Fault::kBadRequest);
  EXPECT_EQ(gate_->remove(PeerKind::kOperator, kA).error().fault, Fault::kUnknownPeer);
  EXPECT_EQ(gate_->remove(PeerKind::kReplica, kB).error().fault, Fault::kUnknownPeer);
  EXPECT_TRUE(admitted(PeerKind::kReplica, kA));
}

TEST_P(PeerGateTest, RemovalShutsDownThatIdentitysOpenSessionsOnly) {
  ASSERT_TRUE(gate_->add(PeerKind::kReplica, kA, "", 1000));
  ASSERT_TRUE(gate_->add(PeerKind::kReplica, kB, "", 1000));
  int a[2], b[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
  UniqueFd a0(a[0]), a1(a[1]), b0(b[0]), b1(b[1]);
  auto sa = gate_->admit(PeerKind::kReplica, kA, a0.get());
  auto sb = gate_->admit(PeerKind::kReplica, kB, b0.get());
  ASSERT_TRUE(sa && *sa && sb && *sb);
  auto closed = gate_->remove(PeerKind::kReplica, kA);
  ASSERT_TRUE(closed);
  EXPECT_EQ(*closed, 1u);
  char c;
  EXPECT_EQ(recv(a1.get(), &c, 1, MSG_DONTWAIT), 0) << "A's session was not shut down";
  EXPECT_EQ(recv(b1.get(), &c, 1, MSG_DONTWAIT), -1) << "B's session was shut down";
  EXPECT_FALSE(admitted(PeerKind::kReplica, kA));
  sb->reset();  // B's session ends: removing B now finds nothing open
  EXPECT_EQ(gate_->remove(PeerKind::kReplica, kB).value_or(99), 0u);
}

TEST_P(PeerGateTest, PendingIsEscapedDeduplicatedClearedByAddAndBounded) {
  gate_->refused_replica(kA, "evil\x1b[2J", "10.0.0.1:4000", 1000);
  gate_->refused_replica(kA, "evil", "10.0.0.1:4001", 2000);
  auto pending = gate_->pending();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].attempts, 2u);
  EXPECT_EQ(pending[0].address, "10.0.0.1:4001");
  gate_->refused_replica(kB, "evil\x1b[2J", "10.0.0.2:4000", 3000);
  EXPECT_EQ(gate_->pending()[0].name, "evil\\x1b[2J");
  ASSERT_TRUE(gate_->add(PeerKind::kReplica, kA, "", 4000));
  ASSERT_EQ(gate_->pending().size(), 1u);
  EXPECT_EQ(gate_->pending()[0].id, kB);
  for (int i = 0; i < 100; ++i) {
    gate_->refused_replica(fmt::format("{:04}", i), std::string(1000, 'x'), "10.0.0.3:1", 5000 + i);
  }
  pending = gate_->pending();
  EXPECT_EQ(pending.size(), kMaxPendingReplicas);
  EXPECT_EQ(pending[0].id, "0099");
  EXPECT_LE(pending[0].name.size(), wire::kMaxPeerName + 3);
}

INSTANTIATE_TEST_SUITE_P(, PeerGateTest, kCatalogEngines, catalog_engine_name);

}  // namespace
}  // namespace bkp::server
