// See rejections.h.
#include "server/rejections.h"

#include <fmt/format.h>

#include <utility>

namespace bkp::server {
namespace {
constexpr size_t kMaxAddresses = 4096;  // beyond it, addresses quiet for a while are forgotten
}  // namespace

std::string peer_address(const std::string& peer) { return peer.substr(0, peer.rfind(':')); }

std::optional<std::string> Rejections::line(const std::string& peer, const std::string& reason,
                                            Clock::time_point now) {
  const std::string address = peer_address(peer);
  uint64_t unlogged = 0;
  {
    std::lock_guard lock(mu_);
    if (by_address_.size() >= kMaxAddresses) {
      std::erase_if(by_address_, [&](const auto& e) { return now - e.second.since >= kRejectionQuiet; });
    }
    Seen& seen = by_address_.try_emplace(address, Seen{now}).first->second;
    if (now - seen.since >= kRejectionQuiet) {
      seen.since = now;
      seen.logged = 0;
    }
    if (seen.logged == kRejectionBurst) {
      ++seen.unlogged;
      return std::nullopt;
    }
    ++seen.logged;
    unlogged = std::exchange(seen.unlogged, 0);
  }
  std::string text = fmt::format("connection from {} rejected: {}", peer, reason);
  if (unlogged > 0) {
    text += fmt::format(" ({} more from {} rejected since the last such line, not logged)",
                        unlogged, address);
  }
  return text;
}

}  // namespace bkp::server
