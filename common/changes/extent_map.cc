// Interval merging for dirty extents. std::map keyed by start keeps the ranges sorted, so a new
// range touches only its neighbours: find the first range that could overlap (the one before
// the new start), swallow every range that overlaps or abuts, insert one merged range.
#include "common/changes/extent_map.h"

namespace bkp::changes {

void ExtentMap::add(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  uint64_t start = offset;
  uint64_t end = offset + length < offset ? UINT64_MAX : offset + length;
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->second >= start) it = prev;  // overlaps or abuts on the left
  }
  while (it != ranges_.end() && it->first <= end) {
    start = std::min(start, it->first);
    end = std::max(end, it->second);
    total_ -= it->second - it->first;
    it = ranges_.erase(it);
  }
  ranges_.emplace(start, end);
  total_ += end - start;
}

void ExtentMap::truncate(uint64_t size) {
  auto it = ranges_.lower_bound(size);
  for (auto gone = it; gone != ranges_.end(); ++gone) total_ -= gone->second - gone->first;
  ranges_.erase(it, ranges_.end());
  if (!ranges_.empty()) {
    auto last = std::prev(ranges_.end());
    if (last->second > size) {
      total_ -= last->second - size;
      last->second = size;
    }
  }
}

void ExtentMap::remove(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  uint64_t end = offset + length < offset ? UINT64_MAX : offset + length;
  auto it = ranges_.upper_bound(offset);
  if (it != ranges_.begin()) --it;
  while (it != ranges_.end() && it->first < end) {
    uint64_t a = it->first, b = it->second;
    if (b <= offset) {
      ++it;
      continue;
    }
    it = ranges_.erase(it);
    total_ -= b - a;
    if (a < offset) {
      ranges_.emplace(a, offset);
      total_ += offset - a;
    }
    if (b > end) {
      it = ranges_.emplace(end, b).first;
      total_ += b - end;
      ++it;
    }
  }
}

void ExtentMap::merge(const ExtentMap& other) {
  for (const auto& [start, end] : other.ranges_) add(start, end - start);
}

ExtentMap ExtentMap::take_front(uint64_t max_bytes) {
  ExtentMap out;
  while (!ranges_.empty() && out.total_ < max_bytes) {
    auto first = ranges_.begin();
    uint64_t start = first->first, end = first->second;
    uint64_t room = max_bytes - out.total_;
    if (end - start > room) {  // split: the tail stays here
      out.ranges_.emplace(start, start + room);
      out.total_ += room;
      total_ -= room;
      ranges_.erase(first);
      ranges_.emplace(start + room, end);
      break;
    }
    out.ranges_.emplace(start, end);
    out.total_ += end - start;
    total_ -= end - start;
    ranges_.erase(first);
  }
  return out;
}

}  // namespace bkp::changes
