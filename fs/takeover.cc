// Shared records for worker takeover (takeover.h): the memfd chunks, node records' checksums,
// the fh table and the stored INIT exchange.
#include "fs/takeover.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>

#include <fmt/format.h>

namespace bkp::fs {

// ---------------------------------------------------------------------------- SharedRecords

Result<std::unique_ptr<SharedRecords>> SharedRecords::open(UniqueFd fd, size_t record_size) {
  std::unique_ptr<SharedRecords> records(new SharedRecords(std::move(fd), record_size));
  struct stat st;
  if (::fstat(records->fd_.get(), &st) < 0) return fail_errno("stat shared records");
  const uint64_t chunk_bytes = kChunk * record_size;
  const uint64_t existing = static_cast<uint64_t>(st.st_size) / chunk_bytes;
  for (uint64_t c = 0; c < existing && c < kMaxChunks; ++c) BKP_TRY_VOID(records->map_chunk(c));
  return records;
}

SharedRecords::~SharedRecords() {
  const uint64_t n = chunks_count_.load();
  for (uint64_t c = 0; c < n; ++c) {
    if (char* p = chunks_[c].load()) ::munmap(p, kChunk * record_size_);
  }
}

Result<void> SharedRecords::map_chunk(uint64_t c) {
  const uint64_t chunk_bytes = kChunk * record_size_;
  struct stat st;
  if (::fstat(fd_.get(), &st) < 0) return fail_errno("stat shared records");
  if (static_cast<uint64_t>(st.st_size) < (c + 1) * chunk_bytes &&
      ::ftruncate(fd_.get(), static_cast<off_t>((c + 1) * chunk_bytes)) < 0) {
    return fail_errno("grow shared records");
  }
  void* p = ::mmap(nullptr, chunk_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(),
                   static_cast<off_t>(c * chunk_bytes));
  if (p == MAP_FAILED) return fail_errno("map shared records");
  chunks_[c].store(static_cast<char*>(p), std::memory_order_release);
  if (chunks_count_.load() < c + 1) chunks_count_.store(c + 1, std::memory_order_release);
  return {};
}

void* SharedRecords::find(uint64_t i) const {
  if ((i >> kChunkBits) >= kMaxChunks) return nullptr;
  char* chunk = chunks_[i >> kChunkBits].load(std::memory_order_acquire);
  return chunk == nullptr ? nullptr : chunk + (i & (kChunk - 1)) * record_size_;
}

Result<void*> SharedRecords::ensure(uint64_t i) {
  if ((i >> kChunkBits) >= kMaxChunks) return fail(ENFILE, "shared record table full");
  for (uint64_t c = chunks_count_.load(); c <= (i >> kChunkBits); ++c) BKP_TRY_VOID(map_chunk(c));
  return find(i);
}

// ---------------------------------------------------------------------------- NodeRecord

uint64_t NodeRecord::checksum() const {
  const char* begin = reinterpret_cast<const char*>(&parent);
  const size_t length = offsetof(NodeRecord, pad) - offsetof(NodeRecord, parent);
  uint64_t sum = XXH3_64bits(begin, length);
  return sum == 0 ? 1 : sum;
}

void NodeRecord::publish(uint64_t parent_id, uint64_t dev_no, uint64_t ino_no, uint32_t file_type,
                         std::string_view file_handle, std::string_view first_name) {
  check = 0;
  parent = parent_id;
  dev = dev_no;
  ino = ino_no;
  type = file_type;
  handle_len = static_cast<uint16_t>(std::min(file_handle.size(), sizeof(handle)));
  name_len = static_cast<uint16_t>(std::min(first_name.size(), sizeof(name)));
  std::memcpy(handle, file_handle.data(), handle_len);
  std::memcpy(name, first_name.data(), name_len);
  std::atomic_thread_fence(std::memory_order_release);
  check = checksum();
}

bool NodeRecord::valid() const { return check != 0 && check == checksum(); }

// ---------------------------------------------------------------------------- OpenFiles

OpenFiles::OpenFiles(std::unique_ptr<SharedRecords> records, uint32_t generation, Reopen reopen)
    : records_(std::move(records)), generation_(generation), reopen_(std::move(reopen)) {
  // The predecessor's slots stay taken until the kernel releases them; the rest are free.
  const uint64_t capacity = records_->capacity();
  uint64_t last = 0;
  for (uint64_t i = 0; i < capacity; ++i) {
    if (static_cast<OpenRecord*>(records_->find(i))->node != 0) last = i + 1;
  }
  for (uint64_t i = last; i-- > 0;) {
    if (static_cast<OpenRecord*>(records_->find(i))->node == 0) free_.push_back(i);
  }
  next_ = last;
}

OpenRecord* OpenFiles::record(uint64_t fh) const {
  const uint64_t slot = (fh & 0xffffffffu);
  if (slot == 0) return nullptr;
  auto* r = static_cast<OpenRecord*>(records_->find(slot - 1));
  return r != nullptr && r->node != 0 && r->fh == fh ? r : nullptr;
}

Result<uint64_t> OpenFiles::add(uint64_t node, int flags, OpenKind kind, uint64_t local) {
  std::lock_guard lock(mu_);
  uint64_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else {
    if (next_ >= 0xffffffffu) return fail(ENFILE, "too many open files");
    BKP_TRY(records_->ensure(next_));
    slot = next_++;
  }
  auto* r = static_cast<OpenRecord*>(records_->find(slot));
  if (r == nullptr) return fail(EIO, "internal: fh table not mapped");
  r->uses = r->uses + 1 == 0 ? 1 : r->uses + 1;
  const uint64_t fh = (uint64_t{r->uses} << 32) | (slot + 1);
  r->local.store(local, std::memory_order_relaxed);
  r->generation.store(generation_, std::memory_order_release);
  r->flags = flags;
  r->kind = static_cast<uint32_t>(kind);
  r->fh = fh;
  r->node = node;  // last: a successor takes the slot as taken only now
  return fh;
}

Result<uint64_t> OpenFiles::get(uint64_t fh) {
  OpenRecord* r = record(fh);
  if (r == nullptr) {
    const uint64_t slot = fh & 0xffffffffu;
    auto* at = slot == 0 ? nullptr : static_cast<OpenRecord*>(records_->find(slot - 1));
    return fail(EBADF, fmt::format("unknown file handle {:#x} (slot holds node {} fh {:#x})", fh,
                                   at ? at->node : 0, at ? at->fh : 0));
  }
  if (r->generation.load(std::memory_order_acquire) == generation_) return r->local.load();
  std::lock_guard lock(mu_);
  if (r->generation.load(std::memory_order_acquire) == generation_) return r->local.load();
  uint64_t local = BKP_TRY(reopen_(r->node, r->flags, static_cast<OpenKind>(r->kind)));
  r->local.store(local, std::memory_order_relaxed);
  r->generation.store(generation_, std::memory_order_release);
  return local;
}

void OpenFiles::for_each(const std::function<void(uint64_t node, OpenKind kind)>& fn) {
  std::lock_guard lock(mu_);
  for (uint64_t i = 0; i < next_; ++i) {
    auto* r = static_cast<OpenRecord*>(records_->find(i));
    if (r->node != 0) fn(r->node, static_cast<OpenKind>(r->kind));
  }
}

std::optional<uint64_t> OpenFiles::release(uint64_t fh, uint64_t* node) {
  std::lock_guard lock(mu_);
  OpenRecord* r = record(fh);
  if (r == nullptr) return std::nullopt;
  if (node != nullptr) *node = r->node;
  std::optional<uint64_t> local;
  if (r->generation.load() == generation_) local = r->local.load();
  r->node = 0;
  r->generation.store(0);
  free_.push_back((fh & 0xffffffffu) - 1);
  return local;
}

// ---------------------------------------------------------------------------- SessionStore

namespace {

constexpr uint64_t kSessionMagic = 0x6b70626b73657331ull;  // "1seskbpk"

// The handed-over stream and the done ring sit past the INIT exchange (under a page).
constexpr off_t kStreamAt = 60 * 1024;
constexpr off_t kDoneAt = 64 * 1024;
constexpr uint64_t kStreamMagic = 0x6b70626b6d727473ull;  // "strmkbpk"

struct StreamRecord {
  uint64_t magic;
  uint64_t instance;
  uint64_t committed;
};

struct SessionHeader {
  uint64_t magic;
  uint32_t generation;
  uint32_t request_len;
  uint32_t reply_len;
  uint32_t pad;
};

}  // namespace

Result<SessionStore> SessionStore::open(UniqueFd fd) {
  SessionStore store;
  SessionHeader h{};
  ssize_t n = ::pread(fd.get(), &h, sizeof(h), 0);
  if (n < 0) return fail_errno("read session");
  if (n == sizeof(h) && h.magic == kSessionMagic) {
    store.generation_ = h.generation + 1;
    store.request_.resize(h.request_len);
    store.reply_.resize(h.reply_len);
    if (::pread(fd.get(), store.request_.data(), h.request_len, sizeof(h)) !=
            static_cast<ssize_t>(h.request_len) ||
        ::pread(fd.get(), store.reply_.data(), h.reply_len, sizeof(h) + h.request_len) !=
            static_cast<ssize_t>(h.reply_len)) {
      return fail(EIO, "session store: short INIT exchange");
    }
  } else {
    h = SessionHeader{.magic = kSessionMagic};
  }
  h.generation = store.generation_;
  if (::pwrite(fd.get(), &h, sizeof(h), 0) != sizeof(h)) return fail_errno("write session");
  struct stat st;
  if (::fstat(fd.get(), &st) < 0) return fail_errno("stat session");
  if (st.st_size < kDoneAt + static_cast<off_t>(sizeof(DoneRing)) &&
      ::ftruncate(fd.get(), kDoneAt + static_cast<off_t>(sizeof(DoneRing))) < 0) {
    return fail_errno("grow session");
  }
  void* ring = ::mmap(nullptr, sizeof(DoneRing), PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(),
                      kDoneAt);
  if (ring == MAP_FAILED) return fail_errno("map session");
  store.done_ = std::shared_ptr<DoneRing>(static_cast<DoneRing*>(ring),
                                          [](DoneRing* p) { ::munmap(p, sizeof(DoneRing)); });
  store.fd_ = std::move(fd);
  return store;
}

Result<void> SessionStore::store_stream(StreamPoint point) {
  StreamRecord r{kStreamMagic, point.instance, point.committed};
  if (::pwrite(fd_.get(), &r, sizeof(r), kStreamAt) != sizeof(r)) return fail_errno("store stream");
  return {};
}

std::optional<SessionStore::StreamPoint> SessionStore::take_stream() {
  StreamRecord r{};
  if (::pread(fd_.get(), &r, sizeof(r), kStreamAt) != sizeof(r) || r.magic != kStreamMagic) {
    return std::nullopt;
  }
  StreamRecord cleared{};
  if (::pwrite(fd_.get(), &cleared, sizeof(cleared), kStreamAt) != sizeof(cleared)) {
    return std::nullopt;  // not cleared: not taken either (a crash would reuse it)
  }
  return StreamPoint{r.instance, r.committed};
}

void SessionStore::note_done(uint64_t unique) {
  const uint64_t slot = done_->next.fetch_add(1) % kDoneSlots;
  done_->uniques[slot].store(unique, std::memory_order_release);
}

bool SessionStore::was_done(uint64_t unique) const {
  for (const auto& u : done_->uniques) {
    if (u.load(std::memory_order_acquire) == unique) return true;
  }
  return false;
}

Result<void> SessionStore::store_init(std::string_view request, std::string_view reply) {
  SessionHeader h{.magic = kSessionMagic,
                  .generation = generation_,
                  .request_len = static_cast<uint32_t>(request.size()),
                  .reply_len = static_cast<uint32_t>(reply.size())};
  if (::pwrite(fd_.get(), request.data(), request.size(), sizeof(h)) !=
          static_cast<ssize_t>(request.size()) ||
      ::pwrite(fd_.get(), reply.data(), reply.size(), sizeof(h) + request.size()) !=
          static_cast<ssize_t>(reply.size()) ||
      ::pwrite(fd_.get(), &h, sizeof(h), 0) != sizeof(h)) {
    return fail_errno("store INIT");
  }
  request_ = request;
  reply_ = reply;
  return {};
}

}  // namespace bkp::fs
