// The authorisation decisions of backupd's listening port (see peer_gate.h).
//
// The catalog is the authority and is asked on every connection, so `bkptool replica add` takes
// effect for the very next connection without a cache to invalidate. The pending list is kept
// in memory only: it is a hint for the operator ("this id tried to connect"), rebuilt by the
// replicator's own retries after a restart, and bounded so an attacker cycling identities can
// only push out older hints, never grow backupd.
#include "server/peer_gate.h"

#include <sys/socket.h>

#include <fmt/format.h>

#include <algorithm>

#include "common/log.h"
#include "common/net/identity.h"
#include "common/path.h"
#include "common/wire/messages.h"

namespace bkp::server {
namespace {

ControlResult<std::string> checked_id(const std::string& id) {
  auto parsed = net::parse_id(id);
  if (!parsed) return control_fail(Fault::kBadRequest, parsed.error().message);
  return *parsed;
}

}  // namespace

std::string display_text(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return wire::escape_controls(text);
  return wire::escape_controls(text.substr(0, max_bytes)) + "...";
}

PeerGate::Session::Session(Session&& other) noexcept
    : gate_(std::exchange(other.gate_, nullptr)), token_(other.token_) {}

PeerGate::Session& PeerGate::Session::operator=(Session&& other) noexcept {
  if (this != &other) {
    if (gate_ != nullptr) gate_->leave(token_);
    gate_ = std::exchange(other.gate_, nullptr);
    token_ = other.token_;
  }
  return *this;
}

PeerGate::Session::~Session() {
  if (gate_ != nullptr) gate_->leave(token_);
}

void PeerGate::leave(uint64_t token) {
  std::lock_guard lock(mu_);
  open_.erase(token);
}

Result<std::optional<PeerGate::Session>> PeerGate::admit(PeerKind kind, const std::string& id,
                                                         int fd) {
  uint64_t token;
  {
    std::lock_guard lock(mu_);
    token = next_token_++;
    open_.emplace(token, Open{kind, id, fd});
  }
  Session session(this, token);
  if (!BKP_TRY(catalog_.is_peer(kind, id))) return std::nullopt;
  return std::optional<Session>(std::move(session));
}

void PeerGate::refused_replica(const std::string& id, const std::string& name,
                               const std::string& address, int64_t now_ms) {
  std::lock_guard lock(mu_);
  PendingReplica entry{id, display_text(name, wire::kMaxPeerName), address, now_ms, 1};
  auto same = std::find_if(pending_.begin(), pending_.end(),
                           [&](const PendingReplica& p) { return p.id == id; });
  if (same != pending_.end()) {
    entry.attempts = same->attempts + 1;
    pending_.erase(same);
  }
  pending_.push_front(std::move(entry));
  if (pending_.size() > kMaxPendingReplicas) pending_.pop_back();
}

std::vector<PendingReplica> PeerGate::pending() const {
  std::lock_guard lock(mu_);
  return {pending_.begin(), pending_.end()};
}

ControlResult<PeerRecord> PeerGate::add(PeerKind kind, const std::string& id,
                                        const std::string& name, int64_t now_ms) {
  PeerRecord record{kind, BKP_TRY(checked_id(id)), name, now_ms};
  if (name.size() > wire::kMaxPeerName || wire::escape_controls(name) != name) {
    return control_fail(Fault::kBadRequest,
                        fmt::format("name '{}' must be at most {} bytes without control "
                                    "characters", display_text(name, wire::kMaxPeerName), wire::kMaxPeerName));
  }
  if (kind == PeerKind::kReplica && !name.empty()) {
    if (auto ok = validate_host(name); !ok) {
      return control_fail(Fault::kBadRequest,
                          fmt::format("replica name '{}': {} (it is the name the replicator "
                                      "runs with, replicator --name)",
                                      display_text(name, wire::kMaxPeerName), ok.error().message));
    }
    auto all = catalog_.peers(PeerKind::kReplica);
    if (!all) return control_fail(Fault::kInternal, all.error().message);
    for (const auto& p : *all) {
      if (p.name == name && p.id != record.id) {
        return control_fail(Fault::kDuplicate,
                            fmt::format("the name '{}' belongs to replica identity {}", name, p.id));
      }
    }
  }
  for (PeerKind k : {PeerKind::kReplica, PeerKind::kOperator}) {
    auto known = catalog_.is_peer(k, record.id);
    if (!known) return control_fail(Fault::kInternal, known.error().message);
    if (!*known) continue;
    return control_fail(Fault::kDuplicate,
                        k == kind ? fmt::format("{} identity {} is already authorised",
                                                peer_kind_name(kind), record.id)
                                  : fmt::format("identity {} is already authorised as {}: one "
                                                "identity has one role; remove it there first",
                                                record.id, k == PeerKind::kReplica
                                                               ? "a replica" : "an operator"));
  }
  if (auto added = catalog_.add_peer(record); !added) {
    Fault fault = added.error().code == EEXIST ? Fault::kDuplicate : Fault::kInternal;
    return control_fail(fault, added.error().message);
  }
  std::lock_guard lock(mu_);
  std::erase_if(pending_, [&](const PendingReplica& p) { return p.id == record.id; });
  return record;
}

Result<void> PeerGate::claim_name(const std::string& id, const std::string& name) {
  std::lock_guard lock(mu_);  // two first connections must not both take one name
  auto all = BKP_TRY(catalog_.peers(PeerKind::kReplica));
  const PeerRecord* mine = nullptr;
  for (const auto& p : all) {
    if (p.id == id) mine = &p;
  }
  if (mine == nullptr) return fail(EACCES, fmt::format("replicator identity {} is not authorised", id));
  const std::string shown = display_text(name, wire::kMaxPeerName);
  if (!mine->name.empty() && mine->name != name) {
    return fail(EACCES, fmt::format("replicator identity {} is authorised as '{}', not '{}': start "
                                    "it with --name {} (or bkptool replica remove {}, then "
                                    "replica add {} --name NEW)",
                                    id, mine->name, shown, mine->name, id, id));
  }
  for (const auto& p : all) {
    if (p.id != id && p.name == name) {
      return fail(EACCES, fmt::format("the name '{}' belongs to replicator identity {}; this one "
                                      "({}) needs a name of its own (replicator --name)",
                                      shown, p.id, id));
    }
  }
  if (mine->name.empty()) {
    BKP_TRY_VOID(validate_host(name));
    BKP_TRY(catalog_.name_peer(PeerKind::kReplica, id, name));
    log::info("replicator identity {} goes by the name {} from now on", id, name);
  }
  return {};
}

ControlResult<size_t> PeerGate::remove(PeerKind kind, const std::string& id) {
  std::string canonical = BKP_TRY(checked_id(id));
  auto removed = catalog_.remove_peer(kind, canonical);
  if (!removed) return control_fail(Fault::kInternal, removed.error().message);
  if (!*removed) {
    return control_fail(Fault::kUnknownPeer,
                        fmt::format("{} identity {} is not authorised here (see bkptool {} list)",
                                    peer_kind_name(kind), canonical, peer_kind_name(kind)));
  }
  std::lock_guard lock(mu_);
  size_t ended = 0;
  for (const auto& [token, open] : open_) {
    if (open.kind != kind || open.id != canonical) continue;
    ::shutdown(open.fd, SHUT_RDWR);  // its thread sees the connection end and cleans up
    ++ended;
  }
  return ended;
}

ControlResult<std::vector<PeerRecord>> PeerGate::list(PeerKind kind) {
  auto peers = catalog_.peers(kind);
  if (!peers) return control_fail(Fault::kInternal, peers.error().message);
  return std::move(*peers);
}

}  // namespace bkp::server
