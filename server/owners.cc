// preferred_owner (see owners.h).
#include "server/owners.h"

#include <xxhash.h>

#include <cstdint>

namespace bkp::server {

std::string preferred_owner(std::string_view volume_key, const std::vector<std::string>& servers) {
  std::string best;
  uint64_t best_weight = 0;
  for (const auto& server : servers) {
    // The volume's key seeds the server's hash: a weight per (volume, server) pair.
    const uint64_t weight = XXH3_64bits_withSeed(server.data(), server.size(),
                                                 XXH3_64bits(volume_key.data(), volume_key.size()));
    if (best.empty() || weight > best_weight || (weight == best_weight && server < best)) {
      best = server;
      best_weight = weight;
    }
  }
  return best;
}

}  // namespace bkp::server
