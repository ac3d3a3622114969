// What one backupfs worker leaves for the next on the same FUSE connection (keeper.h says who
// holds it). The kernel keeps calling files by the node ids and file handles (fh) a dead worker
// gave it, so the meaning of each must outlive the process: it lives in memfds the keeper holds
// and hands to every worker, written in place as it changes (a store into shared memory, no
// syscall), read once by a successor at start.
//
//   nodes:    NodeRecord per node id: the backing file's handle, one known name (parent id and
//             name) and the kernel's lookup count; InodeTable writes them (inode_table.h).
//   files:    OpenRecord per fh: the node and open flags; a successor reopens the file by handle
//             when the kernel first uses the fh (OpenFiles below).
//   session:  the kernel's INIT request and our reply, so a successor hands libfuse the same
//             INIT and skips a negotiation the kernel will not repeat (kernel_channel.h).
//
// A SIGKILL can interrupt a record's update: each record carries a checksum of its fields,
// written last, and a record that does not match it is treated as unknown (its node answers
// ESTALE) instead of naming a wrong file.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::fs {

// Fixed-size records in a memfd, in chunks of 2^16 mapped on first use, so ids index them
// directly and nothing ever moves. find() takes no lock; growth is the caller's to serialise.
class SharedRecords {
 public:
  static constexpr unsigned kChunkBits = 16;
  static constexpr uint64_t kChunk = uint64_t{1} << kChunkBits;
  static constexpr uint64_t kMaxChunks = uint64_t{1} << 16;

  // fd: a memfd, empty or holding a predecessor's records (all of them are mapped).
  static Result<std::unique_ptr<SharedRecords>> open(UniqueFd fd, size_t record_size);
  ~SharedRecords();
  SharedRecords(const SharedRecords&) = delete;
  SharedRecords& operator=(const SharedRecords&) = delete;

  // Record i, or nullptr if its chunk does not exist yet.
  void* find(uint64_t i) const;
  // Record i, its chunk created (zeroed) if needed.
  Result<void*> ensure(uint64_t i);
  // How many records the mapped chunks hold.
  uint64_t capacity() const { return chunks_count_.load(std::memory_order_acquire) * kChunk; }

 private:
  SharedRecords(UniqueFd fd, size_t record_size) : fd_(std::move(fd)), record_size_(record_size) {}
  Result<void> map_chunk(uint64_t c);

  UniqueFd fd_;
  size_t record_size_;
  std::unique_ptr<std::atomic<char*>[]> chunks_{new std::atomic<char*>[kMaxChunks]()};
  std::atomic<uint64_t> chunks_count_{0};
};

// A node id's meaning. 512 bytes: a handle (MAX_HANDLE_SZ plus its header) and a NAME_MAX name.
struct NodeRecord {
  std::atomic<uint64_t> nlookup;  // outside the checksum: one aligned store, never torn
  uint64_t check;                 // checksum of the fields below; 0: a free id
  uint64_t parent;                // id of the directory its first known name is in; 0: none
  uint64_t dev;
  uint64_t ino;
  uint32_t type;  // S_IFMT bits
  uint16_t handle_len;
  uint16_t name_len;
  char handle[136];
  char name[256];
  char pad[72];

  // Fills the checked fields and then the checksum.
  void publish(uint64_t parent_id, uint64_t dev_no, uint64_t ino_no, uint32_t file_type,
               std::string_view file_handle, std::string_view first_name);
  void clear() { check = 0; }
  // Whether the record holds a node whose fields match their checksum.
  bool valid() const;
  uint64_t checksum() const;
};
static_assert(sizeof(NodeRecord) == 512);

// What an fh stands for. local is the worker's own object (a descriptor or a directory stream),
// valid only while generation is the current worker's.
struct OpenRecord {
  uint64_t node;  // node id; 0: a free fh
  uint64_t fh;    // the fh the kernel holds for it (OpenFiles)
  int32_t flags;  // the open flags the kernel sent
  uint32_t kind;  // OpenKind
  std::atomic<uint64_t> local;
  std::atomic<uint32_t> generation;
  uint32_t uses;  // how many fhs the slot has had (OpenFiles)
};
static_assert(sizeof(OpenRecord) == 40);

enum class OpenKind : uint32_t { kFile = 1, kDir = 2 };

// The fh table over shared OpenRecords. An fh is (the slot's uses, counted in the shared record)
// << 32 | (index + 1): every open that takes a slot gets another fh, whichever worker serves it,
// so a RELEASE that the kernel resends after a takeover (the dead worker freed the slot, perhaps
// gave it to a new open, and died before answering) cannot free the open that took the slot
// since. Such a stale fh is simply unknown. (Found by TakeoverTest: with the worker's generation
// in place of the count, a slot freed and retaken by the same worker had the same fh again.)
class OpenFiles {
 public:
  // Reopens what an fh of a predecessor stands for; returns the new local value.
  using Reopen = std::function<Result<uint64_t>(uint64_t node, int flags, OpenKind kind)>;

  // records: the shared table (a predecessor's entries are kept); generation: this worker's;
  // reopen: how to get a local value for a predecessor's fh.
  OpenFiles(std::unique_ptr<SharedRecords> records, uint32_t generation, Reopen reopen);

  // A new fh for local (node, flags, kind). ENFILE when the table is full.
  Result<uint64_t> add(uint64_t node, int flags, OpenKind kind, uint64_t local);
  // The local value of fh, reopened on first use after a takeover.
  Result<uint64_t> get(uint64_t fh);
  // Frees fh; returns its local value if this worker opened it (for the caller to close), and
  // sets *node to the node it stood for. A stale or unknown fh frees nothing.
  std::optional<uint64_t> release(uint64_t fh, uint64_t* node = nullptr);
  // Calls fn(node, kind) for every fh taken (at start: the predecessor's).
  void for_each(const std::function<void(uint64_t node, OpenKind kind)>& fn);

 private:
  // The record of fh if fh is what the kernel holds for it (a taken slot, the same fh).
  OpenRecord* record(uint64_t fh) const;

  std::unique_ptr<SharedRecords> records_;
  const uint32_t generation_;
  const Reopen reopen_;
  std::mutex mu_;                  // allocation and reopening
  std::vector<uint64_t> free_;     // GUARDED_BY(mu_): free slots
  uint64_t next_ = 0;              // GUARDED_BY(mu_): the first slot never used
};

// The INIT exchange, stored by the first worker and replayed by the others; and the count of
// workers so far (each one's generation).
class SessionStore {
 public:
  // fd: the session memfd (empty before the first worker).
  static Result<SessionStore> open(UniqueFd fd);

  // This worker's generation: one more than the last worker's (1 for the first).
  uint32_t generation() const { return generation_; }
  // The stored INIT request and reply; empty before the first worker stored them.
  const std::string& init_request() const { return request_; }
  const std::string& init_reply() const { return reply_; }
  // Stores the INIT exchange (the first worker, once its reply is written).
  Result<void> store_init(std::string_view request, std::string_view reply);

  // The node's stream, handed from a worker that shipped everything it recorded (an upgrade
  // with backupd attached) to the next, which continues it instead of reconciling. take_stream
  // clears it: a worker's own stream is only ever handed on by that worker.
  struct StreamPoint {
    uint64_t instance;
    uint64_t committed;
  };
  Result<void> store_stream(StreamPoint point);
  std::optional<StreamPoint> take_stream();

  // Requests that cannot tell from the tree whether they were carried out (RENAME_EXCHANGE: a
  // second exchange swaps back) note their unique once done, before the reply; a resent one
  // asks. The last kDoneSlots are kept (more than can be in flight at once).
  void note_done(uint64_t unique);
  bool was_done(uint64_t unique) const;

 private:
  static constexpr size_t kDoneSlots = 511;
  struct DoneRing {
    std::atomic<uint64_t> next;
    std::atomic<uint64_t> uniques[kDoneSlots];
  };
  std::shared_ptr<DoneRing> done_;  // mapped from the session memfd
  UniqueFd fd_;
  uint32_t generation_ = 1;
  std::string request_, reply_;
};

}  // namespace bkp::fs
