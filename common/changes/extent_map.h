// ExtentMap: the dirty byte ranges of one file, as disjoint half-open intervals [start, end).
//
// Adding a range merges it with every range it overlaps or touches, so a region rewritten a
// million times costs one entry. Memory is proportional to the number of disjoint ranges, never
// to the bytes written. Not thread-safe: the owning ChangeLog locks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>

namespace bkp::changes {

class ExtentMap {
 public:
  void add(uint64_t offset, uint64_t length);
  // Drops everything at or beyond size, shortening a range that straddles it.
  void truncate(uint64_t size);
  // Drops [offset, offset+length), splitting a range that spans it.
  void remove(uint64_t offset, uint64_t length);
  // Merges another map into this one.
  void merge(const ExtentMap& other);
  // Moves the lowest ranges, max_bytes in all (splitting a range if needed), into the result.
  ExtentMap take_front(uint64_t max_bytes);
  void clear() {
    ranges_.clear();
    total_ = 0;
  }

  bool empty() const { return ranges_.empty(); }
  size_t range_count() const { return ranges_.size(); }
  uint64_t total_bytes() const { return total_; }  // kept up to date: O(1)
  // start -> end, ascending, disjoint and non-adjacent.
  const std::map<uint64_t, uint64_t>& ranges() const { return ranges_; }

 private:
  std::map<uint64_t, uint64_t> ranges_;
  uint64_t total_ = 0;  // sum of the ranges' lengths
};

}  // namespace bkp::changes
