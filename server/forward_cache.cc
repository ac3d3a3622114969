// ForwardCache (see forward_cache.h). Chunks are ordered by (id, offset) to find what a write
// overlaps, and by put order to evict; the two maps always hold the same chunks.
#include "server/forward_cache.h"

#include <algorithm>

namespace bkp::server {

bool ForwardBudget::reserve(size_t n) {
  size_t now = used_.load();
  do {
    if (now + n > max_bytes_) return false;
  } while (!used_.compare_exchange_weak(now, now + n));
  return true;
}

void ForwardBudget::enroll(ForwardCache* cache) {
  std::lock_guard lock(mu_);
  caches_.push_back(cache);
}

void ForwardBudget::leave(ForwardCache* cache) {
  std::lock_guard lock(mu_);
  std::erase(caches_, cache);
}

void ForwardBudget::shed(const ForwardCache* except) {
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t last = last_shed_ns_.load();
  if (now - last < std::chrono::nanoseconds(kShedEvery).count() ||
      !last_shed_ns_.compare_exchange_strong(last, now)) {
    return;  // shed a moment ago (or another put is shedding now)
  }
  std::lock_guard lock(mu_);
  for (ForwardCache* c : caches_) {
    if (c != except) c->shed_stale();
  }
}

ForwardCache::ForwardCache(size_t max_bytes, std::chrono::milliseconds stale,
                           std::shared_ptr<ForwardBudget> budget)
    : max_bytes_(max_bytes), stale_(stale), budget_(std::move(budget)) {
  if (budget_) budget_->enroll(this);
}

ForwardCache::~ForwardCache() {
  if (!budget_) return;
  budget_->leave(this);
  budget_->release(stats_.kept_bytes);
}

void ForwardCache::put(uint64_t id, uint64_t offset, uint8_t flags, uint32_t raw_length,
                       std::span<const uint8_t> body, unsigned readers) {
  if (budget_ && readers > 0 && budget_->used() + body.size() > budget_->max_bytes()) {
    budget_->shed(this);  // before this cache's own lock (see ForwardBudget)
  }
  std::lock_guard lock(mu_);
  // A kept chunk is at most kMaxPayload raw, so only those starting that far back can overlap.
  uint64_t from = offset > wire::kMaxPayload ? offset - wire::kMaxPayload : 0;
  uint64_t end = offset + raw_length;
  for (auto it = chunks_.lower_bound({id, from}); it != chunks_.end() && it->first.first == id &&
                                                  it->first.second < end;) {
    auto next = std::next(it);
    if (it->first.second + it->second.chunk->raw_length > offset) erase(it);
    it = next;
  }
  if (readers == 0 || raw_length == 0 || !make_room(body.size())) return;
  auto chunk = std::make_shared<wire::EncodedWrite>();
  chunk->flags = flags;
  chunk->raw_length = raw_length;
  chunk->body.assign(body.begin(), body.end());
  uint64_t seq = next_seq_++;
  chunks_[{id, offset}] = Entry{std::move(chunk), readers, Clock::now(), seq};
  order_[seq] = {id, offset};
  stats_.kept_bytes += body.size();
}

void ForwardCache::drop_file(uint64_t id) {
  std::lock_guard lock(mu_);
  for (auto it = chunks_.lower_bound({id, 0}); it != chunks_.end() && it->first.first == id;) {
    erase(it++);
  }
}

std::shared_ptr<const wire::EncodedWrite> ForwardCache::take(uint64_t id, uint64_t offset,
                                                             uint32_t raw_length) {
  std::lock_guard lock(mu_);
  auto it = chunks_.find({id, offset});
  if (it == chunks_.end() || it->second.chunk->raw_length != raw_length) {
    stats_.miss_bytes += raw_length;
    return nullptr;
  }
  std::shared_ptr<const wire::EncodedWrite> chunk = it->second.chunk;
  stats_.hit_bytes += raw_length;
  if (--it->second.readers == 0) erase(it);
  return chunk;
}

ForwardCache::Stats ForwardCache::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void ForwardCache::erase(std::map<Key, Entry>::iterator it) {
  stats_.kept_bytes -= it->second.chunk->body.size();
  if (budget_) budget_->release(it->second.chunk->body.size());
  order_.erase(it->second.seq);
  chunks_.erase(it);
}

bool ForwardCache::evict_oldest_stale() {
  if (order_.empty()) return false;
  auto it = chunks_.find(order_.begin()->second);
  if (stale_.count() > 0 && it->second.put_at > Clock::now() - stale_) return false;
  erase(it);
  return true;
}

bool ForwardCache::make_room(size_t need) {
  if (need > max_bytes_) return false;
  while (stats_.kept_bytes + need > max_bytes_) {
    if (!evict_oldest_stale()) return false;
  }
  while (budget_ && !budget_->reserve(need)) {
    if (!evict_oldest_stale()) return false;
  }
  return true;
}

void ForwardCache::shed_stale() {
  std::lock_guard lock(mu_);
  while (evict_oldest_stale()) {
  }
}

}  // namespace bkp::server
