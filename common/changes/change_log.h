// ChangeLog: what changed in a tree and has not been acknowledged downstream (DESIGN.md §2).
//
// Two parts: an ordered list of namespace/metadata operations, and per regular file (by FileId)
// a set of dirty extents plus an "attributes changed" flag. Extent bytes are not kept: the
// shipper reads them from the tree when it ships, so memory is bounded by the number of
// operations and dirty ranges, never by the bytes written.
//
// The same class serves both hops: backupfs records into one per volume, and backupd keeps one
// per (replica, volume), fed as it applies a node's stream.
//
// Thread-safety: every method is safe to call concurrently. Recording never blocks on I/O.
// Ordering: the caller records an operation after performing it on the real tree and before
// replying to the kernel, so the log order is an order the tree went through.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/changes/extent_map.h"
#include "common/wire/messages.h"

namespace bkp::changes {

// A regular file as the log names it: the wire id, plus what the data source needs to open it
// (backupfs: the file handle from name_to_handle_at; backupd: empty, the id is enough).
struct FileRef {
  uint64_t id = 0;
  std::string handle;
};

struct FileChange {
  FileRef ref;
  ExtentMap extents;
  bool attrs = false;  // mode/owner/times may have changed: ship an Attr by id
};

// A cut of the log: everything recorded up to one instant, shipped as one unit and acknowledged
// as one unit (number).
struct Batch {
  uint64_t number = 0;
  std::vector<wire::Op> ops;
  std::vector<FileChange> files;

  bool empty() const { return ops.empty() && files.empty(); }
  uint64_t dirty_bytes() const;
};

struct LogStats {
  uint64_t ops = 0;
  uint64_t files = 0;
  uint64_t ranges = 0;
  uint64_t dirty_bytes = 0;
};

class ChangeLog {
 public:
  // Appends a namespace/metadata operation. An Attr op by path supersedes an earlier Attr of the
  // same path still in the log (the later one carries the newer state), unless a rename or
  // removal in between touched that path or an ancestor: then the path may name another entry
  // and both Attrs are kept.
  void record(wire::Op op);
  // Marks [offset, offset+length) of the file dirty.
  void write(const FileRef& file, uint64_t offset, uint64_t length);
  // Marks the file's attributes changed (chmod, chown, utimens on a regular file).
  void attrs(const FileRef& file);
  // Records a kTruncate op and clips the file's dirty extents to size.
  void truncate(const FileRef& file, uint64_t size);

  // Takes everything recorded so far as a batch numbered next_number() and leaves the log empty.
  Batch take();
  // Blocks until the log is non-empty, wake() is called, or timeout passes. True if non-empty.
  bool wait(std::chrono::milliseconds timeout);
  void wake();
  // Drops everything (a baseline is about to supersede it).
  void clear();

  LogStats stats() const;

  // Held shared by whoever performs and records a namespace operation, and exclusively by a
  // baseline scan, so the scan sees the tree at one point of the log.
  std::shared_mutex& namespace_lock() { return namespace_lock_; }

 private:
  void forget_attrs_under(const std::string& path);  // mu_ held
  // Runs change(extents) and keeps ranges_ / dirty_bytes_ in step (mu_ held).
  template <class F>
  void update_extents(FileChange& file, F&& change);
  void reset_locked();  // empties the log (mu_ held)

  mutable std::mutex mu_;  // guards everything below; never held across I/O
  std::condition_variable cv_;
  bool woken_ = false;
  std::vector<wire::Op> ops_;
  // path -> index in ops_ of the latest Attr that a later Attr of the same path may supersede.
  // Ordered, so a rename or removal can drop a whole subtree of entries cheaply.
  std::map<std::string, size_t> attr_index_;
  std::unordered_map<uint64_t, FileChange> files_;
  // Sums over files_, kept as they change so stats() is O(1): it is asked for on every chunk
  // shipped (progress) and by status readers.
  uint64_t ranges_ = 0;
  uint64_t dirty_bytes_ = 0;
  uint64_t next_number_ = 1;
  std::shared_mutex namespace_lock_;
};

}  // namespace bkp::changes
