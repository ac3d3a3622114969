// The inode table: handle-keyed inodes, their known names, and the bounded descriptor cache.
//
// Why handles rather than (st_dev, st_ino) as the key: an inode number is reused as soon as a
// file is deleted, while the kernel may still hold the old inode; a handle carries the
// generation, so a reused number is simply another key.
//
// Names: every lookup or creation adds (dir, name) to the inode's known names, and an index maps
// (dir, name) back to the inode, so unlink and rename drop or move exactly the name they
// invalidate. A path is built from the first known name of each inode up to the root; any known
// name of a hard-linked file is as good as another.
#include "fs/inode_table.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "common/log.h"
#include "fs/file_handle.h"

namespace bkp::fs {

Result<std::unique_ptr<InodeTable>> InodeTable::create(UniqueFd root, size_t fd_budget,
                                                       std::unique_ptr<SharedRecords> nodes) {
  struct stat st;
  if (::fstatat(root.get(), "", &st, AT_EMPTY_PATH) < 0) return fail_errno("stat root");
  auto handle = BKP_TRY(handle_at(root.get(), "", AT_EMPTY_PATH));
  std::unique_ptr<InodeTable> table(new InodeTable(std::move(root)));
  table->fd_budget_ = fd_budget;
  auto inode = std::make_unique<Inode>();
  inode->ref = {file_id_of(handle), handle};
  inode->dev = st.st_dev;
  inode->ino = st.st_ino;
  inode->type = st.st_mode & S_IFMT;
  inode->nlookup = 1;  // never forgotten
  inode->id = FUSE_ROOT_ID;
  inode->fd.store(table->root_fd_.get());
  table->root_ = inode.get();
  table->by_handle_.emplace(std::move(handle), std::move(inode));
  table->nodes_ = std::move(nodes);
  if (table->nodes_ && table->nodes_->capacity() > 0) {
    table->took_over_ = true;
    Lock lock(*table);
    table->adopt_locked();
  }
  return table;
}

// Two passes: every valid record becomes an inode under its id, then each first known name is
// linked to its directory (which also counts the directory's children), and whatever nothing
// holds any more dies as it would have in the predecessor.
void InodeTable::adopt_locked() {
  const uint64_t capacity = nodes_->capacity();
  std::vector<std::pair<Inode*, const NodeRecord*>> adopted;
  for (uint64_t id = FUSE_ROOT_ID + 1; id < capacity; ++id) {
    auto* rec = static_cast<const NodeRecord*>(nodes_->find(id));
    if (rec->check == 0) continue;
    if (!rec->valid()) {
      log::warn("takeover: the record of node {} was torn; the kernel's uses of it get ESTALE",
                id);
      continue;
    }
    std::string handle(rec->handle, rec->handle_len);
    if (by_handle_.contains(handle)) continue;
    auto inode = std::make_unique<Inode>();
    inode->ref = {file_id_of(handle), handle};
    inode->dev = rec->dev;
    inode->ino = rec->ino;
    inode->type = rec->type;
    inode->nlookup = rec->nlookup.load();
    Inode* raw = inode.get();
    while (next_id_ < id) free_ids_.push_back(next_id_++);
    next_id_ = id + 1;
    place_locked(*raw, id);
    by_handle_.emplace(std::move(handle), std::move(inode));
    adopted.emplace_back(raw, rec);
  }
  std::reverse(free_ids_.begin(), free_ids_.end());  // lowest first, as a fresh table
  for (auto& [inode, rec] : adopted) {
    if (rec->parent == 0) continue;
    Inode* dir = rec->parent == FUSE_ROOT_ID ? root_ : nullptr;
    if (dir == nullptr && rec->parent < capacity) {
      auto* chunk = chunks_[rec->parent >> kChunkBits].load();
      dir = chunk != nullptr ? chunk[rec->parent & (kChunk - 1)].load() : nullptr;
    }
    if (dir != nullptr && dir->is_dir()) {
      add_name_locked(*inode, *dir, std::string_view(rec->name, rec->name_len));
    }
  }
  for (auto& [inode, rec] : adopted) maybe_destroy_locked(inode);
  adopted_ = by_handle_.size() - 1;
}

void InodeTable::publish_locked(const Inode& inode) {
  if (!nodes_ || &inode == root_) return;
  auto* rec = static_cast<NodeRecord*>(nodes_->find(inode.id));
  if (rec == nullptr) return;
  const Inode::Name* first = inode.names.empty() ? nullptr : &inode.names.front();
  rec->publish(first ? first->dir->id : 0, inode.dev, inode.ino, inode.type, inode.ref.handle,
               first ? std::string_view(first->name) : std::string_view());
}

void InodeTable::publish_lookups(const Inode& inode) {
  if (!nodes_ || &inode == root_) return;
  if (auto* rec = static_cast<NodeRecord*>(nodes_->find(inode.id))) {
    rec->nlookup.store(inode.nlookup, std::memory_order_relaxed);
  }
}

InodeTable::~InodeTable() {
  root_->fd.store(-1);  // owned by root_fd_
  for (auto& [handle, inode] : by_handle_) {
    int fd = inode->fd.load();
    if (fd >= 0) ::close(fd);
  }
}

Inode& InodeTable::get(fuse_ino_t ino) {
  if (ino == FUSE_ROOT_ID) return *root_;
  Inode* inode = nullptr;
  if (ino >> kChunkBits < kMaxChunks) {
    if (auto* chunk = chunks_[ino >> kChunkBits].load(std::memory_order_acquire)) {
      inode = chunk[ino & (kChunk - 1)].load(std::memory_order_acquire);
    }
  }
  if (inode == nullptr) {
    if (took_over_) {
      log::warn("node {} is unknown since the takeover: answering ESTALE", ino);
      return stale_;
    }
    log::error("internal error: inode {} from the kernel, which it never got from us", ino);
    std::abort();
  }
  return *inode;
}

fuse_ino_t InodeTable::assign_id_locked(Inode& inode) {
  fuse_ino_t id;
  if (!free_ids_.empty()) {
    id = free_ids_.back();
    free_ids_.pop_back();
  } else {
    id = next_id_++;
    if (id >> kChunkBits >= kMaxChunks) {
      log::error("internal error: more than {} inodes at once", kMaxChunks * kChunk);
      std::abort();
    }
  }
  place_locked(inode, id);
  if (nodes_ && !nodes_->ensure(id)) {
    log::warn("cannot keep node {} for a successor (out of memory?): a restart would lose it", id);
  }
  return id;
}

void InodeTable::place_locked(Inode& inode, fuse_ino_t id) {
  auto& chunk = chunks_[id >> kChunkBits];
  if (chunk.load(std::memory_order_relaxed) == nullptr) {
    chunk_storage_.emplace_back(new std::atomic<Inode*>[kChunk]());
    chunk.store(chunk_storage_.back().get(), std::memory_order_release);
  }
  chunk.load(std::memory_order_relaxed)[id & (kChunk - 1)].store(&inode, std::memory_order_release);
  inode.id = id;
}

void InodeTable::release_id_locked(fuse_ino_t id) {
  if (nodes_) {
    if (auto* rec = static_cast<NodeRecord*>(nodes_->find(id))) rec->clear();
  }
  chunks_[id >> kChunkBits].load(std::memory_order_relaxed)[id & (kChunk - 1)].store(
      nullptr, std::memory_order_release);
  free_ids_.push_back(id);
}

size_t InodeTable::size() {
  Lock lock(*this);
  return by_handle_.size();
}

InodeTable::Lock::Lock(InodeTable& table) : table_(table) { table_.mu_.lock(); }

InodeTable::Lock::~Lock() {
  std::vector<std::unique_ptr<Inode>> dead;
  std::vector<int> evicted;
  dead.swap(table_.dead_);
  evicted.swap(table_.to_close_);
  table_.mu_.unlock();
  if (!dead.empty()) table_.close_dead(dead);
  for (int fd : evicted) ::close(fd);
}

// Their descriptors left the ring and the count when they died (maybe_destroy_locked).
void InodeTable::close_dead(std::vector<std::unique_ptr<Inode>>& dead) {
  for (auto& inode : dead) {
    int fd = inode->fd.exchange(-1);
    if (fd >= 0) ::close(fd);
  }
}

Inode& InodeTable::remember(std::string handle, const struct stat& st, Inode& parent,
                            std::string_view name) {
  Lock lock(*this);
  auto it = by_handle_.find(handle);
  Inode* inode;
  if (it != by_handle_.end()) {
    inode = it->second.get();
  } else {
    auto fresh = std::make_unique<Inode>();
    fresh->ref = {file_id_of(handle), handle};
    fresh->dev = st.st_dev;
    fresh->ino = st.st_ino;
    fresh->type = st.st_mode & S_IFMT;
    inode = fresh.get();
    assign_id_locked(*inode);
    by_handle_.emplace(std::move(handle), std::move(fresh));
  }
  inode->nlookup++;
  if (inode != root_) add_name_locked(*inode, parent, name);
  publish_lookups(*inode);
  return *inode;
}

void InodeTable::forget(fuse_ino_t ino, uint64_t n) {
  Inode& inode = get(ino);
  Lock lock(*this);
  if (&inode == root_ || &inode == &stale_) return;
  if (inode.nlookup < n) {
    if (took_over_) {  // forgets the dead predecessor had read were not resent
      log::debug("forget {} of node {} with {} lookups since the takeover", n, ino, inode.nlookup);
      n = inode.nlookup;
    } else {
      log::error("internal error: forget {} of inode with {} lookups", n, inode.nlookup);
      std::abort();
    }
  }
  inode.nlookup -= n;
  publish_lookups(inode);
  maybe_destroy_locked(&inode);
}

// Destroys inode if nothing references it, then the directories it was known in, which may
// have been kept only for it.
void InodeTable::maybe_destroy_locked(Inode* inode) {
  std::vector<Inode*> todo{inode};
  while (!todo.empty()) {
    Inode* n = todo.back();
    todo.pop_back();
    if (n == nullptr || n == root_ || n->nlookup != 0 || n->children != 0) continue;
    for (const Inode::Name& name : n->names) {
      names_.erase(EntryKey{name.dir, name.name});
      name.dir->children--;
      todo.push_back(name.dir);
    }
    n->names.clear();
    auto it = by_handle_.find(n->ref.handle);
    if (it == by_handle_.end() || it->second.get() != n) continue;  // already dead
    unring_locked(*n);
    release_id_locked(n->id);
    dead_.push_back(std::move(it->second));
    by_handle_.erase(it);
  }
}

void InodeTable::add_name_locked(Inode& inode, Inode& dir, std::string_view name) {
  EntryKey key{&dir, std::string(name)};
  auto it = names_.find(key);
  if (it != names_.end() && it->second == &inode) return;
  dir.children++;  // first: keeps dir alive through the drops below
  if (it != names_.end()) drop_name_locked(dir, name);  // the entry no longer names that inode
  if (inode.is_dir()) {
    // A directory has one name; a stale one can only come from a change behind the mount.
    while (!inode.names.empty()) drop_name_locked(*inode.names.back().dir, inode.names.back().name);
  }
  inode.names.push_back({&dir, key.name});
  names_.emplace(std::move(key), &inode);
  if (inode.names.size() == 1) publish_locked(inode);
}

Inode* InodeTable::drop_name_locked(Inode& dir, std::string_view name) {
  auto it = names_.find(EntryKey{&dir, std::string(name)});
  if (it == names_.end()) return nullptr;
  Inode* inode = it->second;
  names_.erase(it);
  auto& v = inode->names;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i].dir == &dir && v[i].name == name) {
      v[i] = std::move(v.back());
      v.pop_back();
      if (i == 0) publish_locked(*inode);  // its first known name changed
      break;
    }
  }
  dir.children--;
  maybe_destroy_locked(&dir);
  maybe_destroy_locked(inode);
  return inode;
}

std::optional<std::string> InodeTable::path_locked(const Inode& inode) const {
  std::vector<const std::string*> parts;
  for (const Inode* n = &inode; n != root_;) {
    if (n->names.empty() || parts.size() > 4096) return std::nullopt;
    parts.push_back(&n->names.front().name);
    n = n->names.front().dir;
  }
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    if (!path.empty()) path += '/';
    path += **it;
  }
  return path;
}

Inode* InodeTable::child_locked(const Inode& dir, std::string_view name) const {
  auto it = names_.find(EntryKey{&dir, std::string(name)});
  return it == names_.end() ? nullptr : it->second;
}

void InodeTable::remove_name_locked(Inode& dir, std::string_view name) {
  drop_name_locked(dir, name);
}

void InodeTable::rename_locked(Inode& from_dir, std::string_view from, Inode& to_dir,
                               std::string_view to, bool exchange) {
  Inode* moved = child_locked(from_dir, from);
  Inode* other = child_locked(to_dir, to);
  if (moved == other) return;  // two names of one file: rename(2) does nothing
  // Keep both alive while their names change.
  if (moved) moved->nlookup++;
  if (other) other->nlookup++;
  drop_name_locked(from_dir, from);
  drop_name_locked(to_dir, to);
  if (moved) add_name_locked(*moved, to_dir, to);
  if (other && exchange) add_name_locked(*other, from_dir, from);
  for (Inode* n : {moved, other}) {
    if (n == nullptr) continue;
    n->nlookup--;
    maybe_destroy_locked(n);
  }
}

// The pin comes before the load and eviction's exchange before its look at the pins (both
// sequentially consistent), so whichever comes second sees the other: either this thread loads
// -1, or the evictor sees the pin and puts the descriptor back.
Result<PathFd> InodeTable::path_fd(Inode& inode) {
  inode.pins.fetch_add(1);
  if (int fd = inode.fd.load(); fd >= 0) {
    // Set only when clear (the clock hand clears it): most operations find it set.
    if (!inode.referenced.load(std::memory_order_relaxed)) {
      inode.referenced.store(true, std::memory_order_relaxed);
    }
    return PathFd::pinned(fd, &inode);
  }
  inode.pins.fetch_sub(1);
  UniqueFd fresh = BKP_TRY(reopen(inode, O_PATH));
  Lock lock(*this);
  if (!cache_locked(inode, fresh.get())) return PathFd::owned(std::move(fresh));
  inode.pins.fetch_add(1);
  return PathFd::pinned(fresh.release(), &inode);
}

bool InodeTable::cache_locked(Inode& inode, int fd) {
  if (&inode == root_ || inode.fd.load() >= 0 || fd_budget_ == 0) return false;
  if (cached_.load() >= fd_budget_ && !evict_one_locked()) return false;
  ring_locked(inode, fd);
  return true;
}

void InodeTable::ring_locked(Inode& inode, int fd) {
  inode.fd.store(fd);
  inode.referenced.store(true, std::memory_order_relaxed);
  inode.ring_slot = ring_.size();
  ring_.push_back(&inode);
  cached_.fetch_add(1);
}

bool InodeTable::evict_one_locked() {
  for (size_t step = 0; step < 2 * ring_.size(); ++step) {
    if (hand_ >= ring_.size()) hand_ = 0;
    Inode& n = *ring_[hand_];
    if (n.referenced.exchange(false, std::memory_order_relaxed)) {
      ++hand_;
      continue;
    }
    if (n.removed) {  // its only way in
      ++hand_;
      continue;
    }
    int fd = n.fd.exchange(-1);
    if (n.pins.load() != 0) {  // in use: back in its place (only this lock caches, so it is free)
      n.fd.store(fd);
      ++hand_;
      continue;
    }
    to_close_.push_back(fd);
    unring_locked(n);
    return true;
  }
  return false;
}

// Takes the inode's slot out of the ring (its descriptor, if still there, is the caller's).
void InodeTable::unring_locked(Inode& inode) {
  if (inode.ring_slot == SIZE_MAX) return;
  size_t slot = inode.ring_slot;
  ring_[slot] = ring_.back();
  ring_[slot]->ring_slot = slot;
  ring_.pop_back();
  inode.ring_slot = SIZE_MAX;
  cached_.fetch_sub(1);
}

Result<UniqueFd> InodeTable::reopen(Inode& inode, int flags) {
  if (inode.ref.handle.empty()) return fail(ESTALE, "node lost in a takeover");
  auto fd = open_by_handle(root_fd_.get(), inode.ref.handle, flags);
  if (fd || fd.error().code != ESTALE) return fd;
  inode.pins.fetch_add(1);  // as path_fd: the cached descriptor stays open while we use it
  if (int cached = inode.fd.load(); cached >= 0) {
    UniqueFd again(::open(fmt::format("/proc/self/fd/{}", cached).c_str(), flags | O_CLOEXEC));
    if (again) fd = std::move(again);
  }
  inode.pins.fetch_sub(1);
  return fd;
}

InodeTable::RemovalHold::RemovalHold(InodeTable& table, Inode& dir, std::string_view name)
    : table_(table) {
  {
    Lock lock(table_);
    Inode* inode = table_.child_locked(dir, name);
    if (inode == nullptr || !inode->is_dir() || inode == table_.root_) return;
    inode->nlookup++;  // alive until we are done, whatever the kernel forgets meanwhile
    inode->pins.fetch_add(1);
    inode_ = inode;
  }
  if (inode_->fd.load() >= 0) return;
  auto fresh = table_.reopen(*inode_, O_PATH);
  if (!fresh) return;  // already gone: nothing to keep
  Lock lock(table_);
  // Beyond the budget if it is full: only directories removed while the kernel holds them.
  if (inode_->fd.load() < 0) table_.ring_locked(*inode_, fresh->release());
}

InodeTable::RemovalHold::~RemovalHold() {
  if (inode_ == nullptr) return;
  Lock lock(table_);
  if (removed_) inode_->removed = true;
  inode_->pins.fetch_sub(1);
  inode_->nlookup--;
  table_.maybe_destroy_locked(inode_);
}

void InodeTable::keep_reachable(Inode& dir, std::string_view name) {
  Inode* inode;
  {
    Lock lock(*this);
    inode = child_locked(dir, name);
    if (inode == nullptr || inode->is_dir()) return;
    inode->nlookup++;  // alive until we are done, whatever the kernel forgets meanwhile
  }
  (void)path_fd(*inode);
  Lock lock(*this);
  inode->nlookup--;
  maybe_destroy_locked(inode);
}

}  // namespace bkp::fs
