// PeerGate: which identities backupd serves besides the nodes it dials itself — replicators and
// remote operators, authorised by `bkptool replica add` / `operator add` and kept in the catalog
// — together with what the operator needs around that decision: the replicators refused lately
// (`bkptool status` lists them as waiting for authorisation, with the id to add), and the
// sessions open now per identity, so that removing an identity also ends its open sessions
// instead of letting a revoked replicator keep receiving volumes until it reconnects.
//
// Thread-safety: every method is safe from any thread. Lock order: PeerGate::mu_ is a leaf
// except that the catalog's mutex may be taken under it (never the reverse).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/catalog.h"
#include "server/registry.h"

namespace bkp::server {

constexpr size_t kMaxPendingReplicas = 64;  // the most recently refused identities

// A replicator that was refused because its identity is not authorised.
struct PendingReplica {
  std::string id;
  std::string name;     // from its Hello, bounded (wire::kMaxPeerName) and escaped
  std::string address;  // where it connected from, "ADDR:PORT"
  int64_t last_seen_ms = 0;
  uint64_t attempts = 0;
};

class PeerGate {
 public:
  explicit PeerGate(Catalog& catalog) : catalog_(catalog) {}
  PeerGate(const PeerGate&) = delete;
  PeerGate& operator=(const PeerGate&) = delete;

  // An open session of an authorised identity. Destroying it (before the socket is closed)
  // ends the registration; remove() of its identity meanwhile shuts its socket down.
  class Session {
   public:
    Session(Session&& other) noexcept;
    Session& operator=(Session&& other) noexcept;
    ~Session();

   private:
    friend class PeerGate;
    Session(PeerGate* gate, uint64_t token) : gate_(gate), token_(token) {}
    PeerGate* gate_;
    uint64_t token_;
  };

  // Admits a session of identity id as kind on socket fd: the Session when id is authorised,
  // nullopt when it is not; a catalog error is returned. The session is registered before the
  // catalog is asked, so a remove() that runs concurrently either is seen here or shuts the
  // session down.
  Result<std::optional<Session>> admit(PeerKind kind, const std::string& id, int fd);

  // Notes a refused replicator; the entry of the same identity is updated.
  void refused_replica(const std::string& id, const std::string& name, const std::string& address,
                       int64_t now_ms);
  // Refused replicators not authorised since, most recent first.
  std::vector<PendingReplica> pending() const;

  // `replica add` / `operator add`: bad_request for an id that is not an identity or a name
  // that is too long or has control characters (a replica's: not a valid replica name, the
  // one it must run with, `replicator --name`); duplicate when the identity is already
  // authorised (as either kind), or a replica name is another replica's. Clears the identity
  // from the pending list.
  ControlResult<PeerRecord> add(PeerKind kind, const std::string& id, const std::string& name,
                                int64_t now_ms);
  // A replicator goes by one name, bound to its identity: the name it was authorised with, or
  // (added without one) the first it connected with, which is then kept. EACCES, with the
  // sentence to show it, when the identity calls itself otherwise, or the name is another
  // authorised replicator's; copies, drops and restore sources follow the name, so one
  // replicator can never receive another's volumes by taking its name.
  Result<void> claim_name(const std::string& id, const std::string& name);

  // `replica remove` / `operator remove`: unknown_peer when the identity is not authorised as
  // kind. Returns how many of its open sessions were shut down.
  ControlResult<size_t> remove(PeerKind kind, const std::string& id);
  ControlResult<std::vector<PeerRecord>> list(PeerKind kind);

 private:
  struct Open {
    PeerKind kind;
    std::string id;
    int fd;
  };
  void leave(uint64_t token);

  Catalog& catalog_;
  mutable std::mutex mu_;
  // Guarded by mu_.
  uint64_t next_token_ = 1;
  std::map<uint64_t, Open> open_;       // by token
  std::deque<PendingReplica> pending_;  // most recent first, at most kMaxPendingReplicas
};

// Text a peer chose, for logs and `bkptool status`: at most max_bytes (cut with "..."), control
// characters escaped as \xNN.
std::string display_text(std::string_view text, size_t max_bytes);

}  // namespace bkp::server
