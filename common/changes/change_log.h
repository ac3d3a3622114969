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
// Bounded: past max_ops queued operations (nothing drains the log: no backupd attached, a
// replica away) the log drops its operations and becomes *overflowed*: it records no more of
// them, keeps recording regular files' dirty ranges (bounded by the files touched), and take()
// gives nothing until a reconcile replaces it (replace()), which finds by manifest what the
// dropped operations did. The sender checks overflowed() before taking a batch.
//
// Thread-safety: every method is safe to call concurrently. Recording never blocks on I/O.
// Ordering: the caller records an operation after performing it on the real tree and before
// replying to the kernel, so the log order is an order the tree went through.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <limits>
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
  // A reconcile found the receiver holding this file with other or unknown content: extents
  // cover the whole file until narrow() keeps only the blocks whose digests differ, plus
  // `written`, which the digests may not have seen.
  bool verify = false;
  // Put in by a scan (replace()); `written` then holds what was recorded of the file since, the
  // part of `extents` that a later scan does not stand for. A taken part of such a file is
  // from_scan too, with `written` empty.
  bool from_scan = false;
  ExtentMap written;
};

// A cut of the log: everything recorded up to one instant, shipped as one unit and acknowledged
// as one unit (number).
struct Batch {
  uint64_t number = 0;
  int64_t since_ns = 0;  // CLOCK_REALTIME of its oldest change (0: unknown)
  std::vector<wire::Op> ops;
  std::vector<FileChange> files;

  bool empty() const { return ops.empty() && files.empty(); }
  uint64_t dirty_bytes() const;
};

// How much one take() may carry, so a long catch-up is many batches and a broken connection
// costs at most one of them. Operations come first: while more than max_ops remain, a take
// carries only operations (a file's data never travels before the operation that creates it).
// Once all operations fit, the take carries them and then files' dirty ranges up to max_bytes
// (at least one range, splitting a large file across takes).
struct Limits {
  size_t max_ops = std::numeric_limits<size_t>::max();
  uint64_t max_bytes = std::numeric_limits<uint64_t>::max();
};

struct LogStats {
  uint64_t ops = 0;
  uint64_t files = 0;
  uint64_t ranges = 0;
  uint64_t dirty_bytes = 0;
};

// Default bound on queued operations: ~30 MiB of them (two records per namespace operation).
constexpr size_t kMaxQueuedOps = 131072;

class ChangeLog {
 public:
  explicit ChangeLog(size_t max_ops = kMaxQueuedOps) : max_ops_(max_ops) {}

  // Appends a namespace/metadata operation. An Attr op by path supersedes an earlier Attr of the
  // same path still in the log (the later one carries the newer state), unless a rename or
  // removal in between touched that path or an ancestor: then the path may name another entry
  // and both Attrs are kept.
  void record(wire::Op op);
  // Marks [offset, offset+length) of the file dirty.
  void write(const FileRef& file, uint64_t offset, uint64_t length);
  // Brackets a write being performed on the source: from begin_write() until the matching
  // write() + end_write(), pending() is true, so no ctime the write moves can be vouched for
  // before the log has the write (shipper.h).
  void begin_write(uint64_t id);
  void end_write(uint64_t id);
  // Marks the file's attributes changed (chmod, chown, utimens on a regular file).
  void attrs(const FileRef& file);
  // Records a kTruncate op and clips the file's dirty extents to size.
  void truncate(const FileRef& file, uint64_t size);
  // Records a kPunch op (the range reads as zeros and is a hole) and drops the range from the
  // file's dirty extents: shipped as data it would arrive as written zeros after the punch.
  void punch(const FileRef& file, uint64_t offset, uint64_t length);
  // Records a kAllocate op (fallocate with flags, wire::kAllocate*): a zero range also drops the
  // range from the dirty extents, as punch does; a plain allocation changes no byte.
  void allocate(const FileRef& file, uint32_t flags, uint64_t offset, uint64_t length);

  // Takes the oldest changes, within limits, as a batch (number 0: the sender numbers it) and
  // leaves the rest in the log. Nothing while overflowed.
  Batch take(const Limits& limits = {});
  // True from the operation that crossed max_ops until the next replace(): the receiver can
  // only be brought up to date by a reconcile.
  bool overflowed() const;
  // Replaces the log's operations with batch (a baseline scan), so what is recorded from now on
  // follows it; changes of regular files recorded so far (data, truncates, attributes by id)
  // are kept after it, since data writes do not wait for the scan. Hold namespace_lock()
  // exclusively across the scan and this call.
  void replace(Batch batch);
  // Blocks until the log is non-empty or overflowed, wake() is called, or timeout passes. True
  // if non-empty or overflowed.
  bool wait(std::chrono::milliseconds timeout);
  void wake();
  // Drops everything (a baseline is about to supersede it).
  void clear();

  // ops counts the operations an overflow dropped too, so the lag still shows them.
  LogStats stats() const;
  // The files a reconcile left to verify (FileChange::verify), and their verdict: extents
  // become `differing` plus whatever was written since the scan. False if the file is not
  // waiting for one (gone, or narrowed already).
  std::vector<FileRef> verifying() const;
  bool narrow(uint64_t id, ExtentMap differing);
  // True while the log holds dirty ranges or changed attributes of this file, or a write of it
  // is being performed, so a ctime read now does not vouch for what the receiver will hold
  // (shipper.h).
  bool pending(uint64_t id) const;
  // CLOCK_REALTIME nanoseconds of the oldest change still in the log; 0 when it is empty.
  int64_t since_ns() const;

  // Held shared by whoever performs and records a namespace operation, and exclusively by a
  // baseline scan, so the scan sees the tree at one point of the log.
  std::shared_mutex& namespace_lock() { return namespace_lock_; }

 private:
  void forget_attrs_under(const std::string& path);  // mu_ held
  void push_locked(wire::Op op);                      // mu_ held
  // Whether an operation recorded now must be dropped (overflowing the log if it just got
  // full), counting it as dropped (mu_ held).
  bool full_locked();
  void dated_locked();  // dates the log's oldest change if it was empty (mu_ held)
  // Runs change(extents) and keeps ranges_ / dirty_bytes_ in step (mu_ held).
  template <class F>
  void update_extents(FileChange& file, F&& change);
  // Records op (by the file's id) and applies change to its dirty and written extents.
  template <class F>
  void clip(const FileRef& file, wire::Op op, F&& change);
  void reset_locked();  // empties the log (mu_ held)

  const size_t max_ops_;
  mutable std::mutex mu_;  // guards everything below; never held across I/O
  bool overflowed_ = false;
  uint64_t dropped_ops_ = 0;  // operations dropped by the overflow (stats())
  std::condition_variable cv_;
  bool woken_ = false;
  std::deque<wire::Op> ops_;
  uint64_t ops_base_ = 0;  // the index (below) of ops_.front(); grows as takes pop the front
  uint64_t live_ops_ = 0;  // ops_ that are not superseded Attrs (what stats() counts)
  // path -> index (ops_base_ + position in ops_) of the latest Attr that a later Attr of the same
  // path may supersede. Ordered, so a rename or removal can drop a whole subtree cheaply.
  std::map<std::string, uint64_t> attr_index_;
  std::unordered_map<uint64_t, FileChange> files_;
  std::unordered_map<uint64_t, uint32_t> writing_;  // id -> writes between begin and end
  uint64_t scanned_until_ = 0;  // index of the first operation recorded after the last replace()
  // Sums over files_, kept as they change so stats() is O(1): it is asked for on every chunk
  // shipped (progress) and by status readers.
  uint64_t ranges_ = 0;
  uint64_t dirty_bytes_ = 0;
  int64_t since_ns_ = 0;  // see since_ns()
  std::shared_mutex namespace_lock_;
};

// begin_write() for its lifetime, end_write() when it ends (whatever path the write took).
class WriteInProgress {
 public:
  WriteInProgress(ChangeLog& log, uint64_t id) : log_(log), id_(id) { log_.begin_write(id_); }
  ~WriteInProgress() { log_.end_write(id_); }
  WriteInProgress(const WriteInProgress&) = delete;
  WriteInProgress& operator=(const WriteInProgress&) = delete;

 private:
  ChangeLog& log_;
  const uint64_t id_;
};

}  // namespace bkp::changes
