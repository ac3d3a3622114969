// InodeTable: the inodes the kernel knows, keyed by file handle, and the names that give the
// change log its volume-relative paths.
//
// The fuse_ino_t of an inode is a small number (FUSE_ROOT_ID for the root), the index of its
// slot in a table of chunks that never move, so get() is two loads and no lock, and an id means
// something outside this process too (a successor taking over the kernel connection can be told
// which file each id the kernel holds names). A dead inode's id is reused, as the kernel allows
// once it has forgotten it. An Inode lives while the kernel holds lookups on it (nlookup) or
// while one of its known names is in it (children), so a path can always be computed for every
// inode that still has a known name.
//
// Known names: every name we hand the kernel (lookup, creation, link, readdirplus, rename) is
// kept until an unlink, rmdir or rename through us removes it. The kernel can only reach an
// inode through a dentry we gave it, so an inode it asks about always has a known name, and a
// known name always exists in the real tree.
//
// Descriptors: an inode may cache one O_PATH descriptor, handed out on first use, within a global
// budget sized from the open-file limit. When the budget is full, a new one evicts the cached
// descriptor of an inode not used since the clock hand last passed it (CLOCK, an approximation
// of least recently used), so the hot set stays open and only a cold inode is reopened by
// handle. An operation pins the inode while it uses the descriptor: eviction takes the
// descriptor out first, then looks at the pins, and puts it back if anyone holds it, so a
// descriptor in use is never closed. A dying Inode's descriptor closes with it.
//
// Takeover: with a SharedRecords of NodeRecords (takeover.h), every id's handle, first known
// name and lookup count are kept there as they change, and create() adopts what a predecessor
// left: the same ids name the same files, each with the name it was last known by. An id the
// kernel holds whose record was lost (torn by a kill) answers ESTALE instead of aborting.
//
// Locking: mu_ guards nlookup, children, names and the maps. Lock order: the change log's
// namespace lock, then this table's Lock, then ChangeLog's internal mutex. No syscall runs under
// mu_: dead inodes' descriptors are closed after it is released.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/changes/change_log.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "fs/takeover.h"

namespace bkp::fs {

struct Inode {
  // Immutable after creation.
  fuse_ino_t id = 0;     // what the kernel calls it
  changes::FileRef ref;  // id = FileId of the handle, handle = raw handle bytes
  dev_t dev = 0;
  ino_t ino = 0;
  mode_t type = 0;  // S_IFMT bits

  std::atomic<int> fd{-1};  // cached O_PATH descriptor, or -1; closed on eviction or death
  std::atomic<uint32_t> pins{0};         // operations using fd right now (PathFd)
  std::atomic<bool> referenced{false};   // used since the clock hand passed (eviction)
  // Known to have no security.capability: made through this mount, or asked and found without
  // one. The kernel asks for it before the first write (xattr_ops.cc); kill_privileges skips it.
  std::atomic<bool> no_capability{false};
  size_t ring_slot = SIZE_MAX;           // index in InodeTable::ring_ while cached (mu_)
  // A directory removed through the mount (mu_): no handle opens it any more, so its cached
  // descriptor is all that reaches it and is never evicted (RemovalHold).
  bool removed = false;

  // Guarded by InodeTable::mu_.
  uint64_t nlookup = 0;   // lookups the kernel holds
  uint64_t children = 0;  // known names inside this directory (each keeps it alive)
  struct Name {
    Inode* dir;
    std::string name;
  };
  std::vector<Name> names;  // known names; a directory has at most one

  bool is_dir() const { return S_ISDIR(type); }
  bool is_reg() const { return S_ISREG(type); }
};

// A descriptor for the duration of one operation: the cached one, with its inode pinned so it is
// not evicted meanwhile, or one of its own.
class PathFd {
 public:
  static PathFd pinned(int fd, Inode* inode) { return PathFd(fd, UniqueFd(), inode); }
  static PathFd owned(UniqueFd fd) {
    int raw = fd.get();
    return PathFd(raw, std::move(fd), nullptr);
  }
  PathFd(PathFd&& other) noexcept
      : fd_(other.fd_), owned_(std::move(other.owned_)), pinned_(std::exchange(other.pinned_, nullptr)) {}
  PathFd& operator=(PathFd&&) = delete;
  PathFd(const PathFd&) = delete;
  ~PathFd() {
    if (pinned_ != nullptr) pinned_->pins.fetch_sub(1);
  }
  int get() const { return fd_; }

 private:
  PathFd(int fd, UniqueFd owned, Inode* pinned)
      : fd_(fd), owned_(std::move(owned)), pinned_(pinned) {}
  int fd_;
  UniqueFd owned_;
  Inode* pinned_;  // unpinned on destruction (null: owned_ or the root's)
};

class InodeTable {
 public:
  // root: a readable (not O_PATH) descriptor of the tree's root directory; it is also the mount
  // fd for open_by_handle_at. fd_budget bounds the cached O_PATH descriptors. nodes: where ids
  // are kept for a successor (NodeRecord); its records, if any, are adopted. May be null.
  static Result<std::unique_ptr<InodeTable>> create(UniqueFd root, size_t fd_budget,
                                                    std::unique_ptr<SharedRecords> nodes);
  ~InodeTable();
  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  Inode& root() { return *root_; }
  int mount_fd() const { return root_fd_.get(); }
  dev_t root_dev() const { return root_->dev; }

  // The inode behind a fuse_ino_t the kernel got from us. Aborts on one we never gave, unless
  // ids were adopted: then an unknown one is stale() (its record was lost).
  Inode& get(fuse_ino_t ino);
  // The inode of ids whose record was lost: no name, no handle (reopen fails with ESTALE).
  Inode& stale() { return stale_; }
  // How many inodes were adopted from a predecessor (0 for a first worker).
  size_t adopted() const { return adopted_; }
  fuse_ino_t ino_of(const Inode& inode) const { return inode.id; }

  // Finds or creates the inode with this handle, counts one kernel lookup and adds
  // (parent, name) to its known names.
  Inode& remember(std::string handle, const struct stat& st, Inode& parent, std::string_view name);
  // The kernel drops n lookups.
  void forget(fuse_ino_t ino, uint64_t n);

  // A descriptor of the inode for *at() calls: the cached O_PATH one (caching a fresh one,
  // evicting a cold one if the budget is full), or a fresh one of its own.
  Result<PathFd> path_fd(Inode& inode);
  // A new descriptor opened with flags (O_CLOEXEC is added). ESTALE if the file is gone; a file
  // whose last name went while its descriptor was cached (keep_reachable) is reopened through
  // that descriptor.
  Result<UniqueFd> reopen(Inode& inode, int flags);
  // Before a rename over (dir, name): the kernel may have looked the file up just before and
  // send its OPEN after, which on a plain directory would open the old or the new file, never
  // fail. Caches the file's O_PATH descriptor (within the budget) so that reopen() can. (An
  // unlinked file needs nothing: its OPEN answers ESTALE, the VFS walks again and finds no name,
  // as if the unlink had come first.)
  void keep_reachable(Inode& dir, std::string_view name);

  // Held across an rmdir of (dir, name): the directory's descriptor is cached (beyond the budget
  // if need be) and pinned, and once removed() is called it is never evicted, so the kernel can
  // still ask about a removed directory it holds (a process's working directory: stat(".") and
  // readdir answer as on a plain directory, not ESTALE) until it forgets the inode.
  class RemovalHold {
   public:
    RemovalHold(InodeTable& table, Inode& dir, std::string_view name);
    ~RemovalHold();
    RemovalHold(const RemovalHold&) = delete;
    RemovalHold& operator=(const RemovalHold&) = delete;
    void removed() { removed_ = true; }

   private:
    InodeTable& table_;
    Inode* inode_ = nullptr;  // nullptr: not a known directory
    bool removed_ = false;
  };

  size_t cached_fds() const { return cached_.load(); }
  size_t size();

  // Holds the table mutex; on release, closes what died meanwhile.
  class Lock {
   public:
    explicit Lock(InodeTable& table);
    ~Lock();
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;

   private:
    InodeTable& table_;
  };

  // The following require a Lock.
  // Volume-relative path of the inode ("" for the root); nullopt if no name is known.
  std::optional<std::string> path_locked(const Inode& inode) const;
  // The inode known under (dir, name), or nullptr.
  Inode* child_locked(const Inode& dir, std::string_view name) const;
  // The entry (dir, name) is gone (unlink, rmdir).
  void remove_name_locked(Inode& dir, std::string_view name);
  // A successful renameat2; exchange: both entries swapped names.
  void rename_locked(Inode& from_dir, std::string_view from, Inode& to_dir, std::string_view to,
                     bool exchange);

 private:
  struct EntryKey {
    const Inode* dir;
    std::string name;
    bool operator==(const EntryKey&) const = default;
  };
  struct EntryHash {
    size_t operator()(const EntryKey& k) const {
      return std::hash<std::string>()(k.name) ^ (reinterpret_cast<uintptr_t>(k.dir) * 0x9e3779b97f4a7c15ull);
    }
  };

  explicit InodeTable(UniqueFd root) : root_fd_(std::move(root)) {}
  void add_name_locked(Inode& inode, Inode& dir, std::string_view name);
  // Drops (dir, name) from the inode it names, if any. Returns that inode (possibly now dead).
  Inode* drop_name_locked(Inode& dir, std::string_view name);
  void maybe_destroy_locked(Inode* inode);
  void close_dead(std::vector<std::unique_ptr<Inode>>& dead);
  // Puts fd in the ring as inode's cached descriptor.
  void ring_locked(Inode& inode, int fd);
  // Caches fd as inode's descriptor if it has none, evicting another if the budget is full.
  // True if fd is now the cached one.
  bool cache_locked(Inode& inode, int fd);
  // Takes the descriptor of one cold, unpinned inode off the ring into to_close_; false if the
  // hand went round twice without finding one.
  bool evict_one_locked();
  void unring_locked(Inode& inode);
  // A free id for a new inode, its slot set to it (mu_ held); release_id_locked frees it.
  fuse_ino_t assign_id_locked(Inode& inode);
  void release_id_locked(fuse_ino_t id);
  // Makes id lead to inode (mu_ held).
  void place_locked(Inode& inode, fuse_ino_t id);
  // Writes inode's shared record (handle, first known name) / its lookup count, if shared.
  void publish_locked(const Inode& inode);
  void publish_lookups(const Inode& inode);
  // Rebuilds the table from the shared records (create()).
  void adopt_locked();

  static constexpr unsigned kChunkBits = 16;
  static constexpr size_t kChunk = size_t{1} << kChunkBits;
  static constexpr size_t kMaxChunks = size_t{1} << 16;  // 2^32 ids; 512 KiB of chunk pointers

  UniqueFd root_fd_;
  size_t fd_budget_ = 0;
  std::atomic<size_t> cached_{0};

  std::mutex mu_;
  Inode* root_ = nullptr;                                               // owned by by_handle_
  std::unordered_map<std::string, std::unique_ptr<Inode>> by_handle_;   // GUARDED_BY(mu_)
  std::unordered_map<EntryKey, Inode*, EntryHash> names_;               // GUARDED_BY(mu_)
  std::vector<std::unique_ptr<Inode>> dead_;  // GUARDED_BY(mu_); closed by ~Lock
  std::vector<int> to_close_;                 // GUARDED_BY(mu_); evicted, closed by ~Lock
  std::vector<Inode*> ring_;                  // GUARDED_BY(mu_); inodes with a cached fd
  // id -> Inode: chunks allocated under mu_, never freed before the table, read without it.
  std::unique_ptr<std::atomic<std::atomic<Inode*>*>[]> chunks_{
      new std::atomic<std::atomic<Inode*>*>[kMaxChunks]()};
  std::vector<std::unique_ptr<std::atomic<Inode*>[]>> chunk_storage_;  // GUARDED_BY(mu_)
  std::vector<fuse_ino_t> free_ids_;                                   // GUARDED_BY(mu_)
  fuse_ino_t next_id_ = FUSE_ROOT_ID + 1;                              // GUARDED_BY(mu_)
  size_t hand_ = 0;                           // GUARDED_BY(mu_); the clock hand in ring_
  std::unique_ptr<SharedRecords> nodes_;      // NodeRecord per id, or null
  size_t adopted_ = 0;
  bool took_over_ = false;  // a predecessor left records: tolerate ids that were lost
  Inode stale_;
};

}  // namespace bkp::fs
