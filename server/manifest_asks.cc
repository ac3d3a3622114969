// A mailbox of manifest asks between a verify and a replica session (see manifest_asks.h).
#include "server/manifest_asks.h"

#include <utility>

namespace bkp::server {

std::future<Result<AskedManifest>> ManifestAsks::post(std::string volume, uint8_t flags,
                                                     bool when_current) {
  return add(std::make_shared<ManifestAsk>(std::move(volume), flags, when_current));
}

std::future<Result<AskedManifest>> ManifestAsks::post_snapshots(std::string volume) {
  return add(std::make_shared<ManifestAsk>(std::move(volume), 0, false, true));
}

std::future<Result<AskedManifest>> ManifestAsks::add(std::shared_ptr<ManifestAsk> ask) {
  auto future = ask->future();
  std::lock_guard lock(mu_);
  asks_.push_back(std::move(ask));
  return future;
}

std::vector<std::shared_ptr<ManifestAsk>> ManifestAsks::take() {
  std::lock_guard lock(mu_);
  return std::exchange(asks_, {});
}

void ManifestAsks::put_back(std::vector<std::shared_ptr<ManifestAsk>> asks) {
  std::lock_guard lock(mu_);
  asks_.insert(asks_.begin(), std::make_move_iterator(asks.begin()),
               std::make_move_iterator(asks.end()));
}

void ManifestAsks::fail_all(const Error& error) {
  for (auto& ask : take()) ask->answer(tl::unexpected(error));
}

}  // namespace bkp::server
