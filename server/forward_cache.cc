// ForwardCache (see forward_cache.h). Chunks are ordered by (id, offset) to find what a write
// overlaps, and by put order to evict; the two maps always hold the same chunks.
#include "server/forward_cache.h"

#include <algorithm>

namespace bkp::server {

void ForwardCache::put(uint64_t id, uint64_t offset, uint8_t flags, uint32_t raw_length,
                       std::span<const uint8_t> body, unsigned readers) {
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
  order_.erase(it->second.seq);
  chunks_.erase(it);
}

bool ForwardCache::make_room(size_t need) {
  if (need > max_bytes_) return false;
  auto stale_before = Clock::now() - stale_;
  while (stats_.kept_bytes + need > max_bytes_) {
    if (order_.empty()) return false;
    auto it = chunks_.find(order_.begin()->second);
    if (stale_.count() > 0 && it->second.put_at > stale_before) return false;
    erase(it);
  }
  return true;
}

}  // namespace bkp::server
