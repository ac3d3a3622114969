// S3ArchiveStore (see s3_store.h).
#include "server/s3_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <optional>
#include <string_view>

#include "common/log.h"

namespace bkp::server {
namespace {


// Whole parts go up as they fill, each on a thread of its own while the next one fills (the
// archive's compression does not wait for the upload; one part in flight, so at most two parts
// of memory); at commit the rest is the last part, or the whole object with one PUT when no
// part went up yet. Without commit, the upload is aborted.
class S3Sink final : public ArchiveSink {
 public:
  S3Sink(S3Client client, std::string bucket, std::string key)
      : client_(std::move(client)), bucket_(std::move(bucket)), key_(std::move(key)) {
    buffer_.reserve(kS3PartBytes);
  }
  ~S3Sink() override {
    (void)wait_part();  // the client is the part thread's until then
    if (upload_ && !committed_) {
      if (auto aborted = upload_->abort(); !aborted) {
        log::warn("snapshot store: {} (removed at the next start)", aborted.error().message);
      }
    }
  }

  Result<void> write(std::span<const char> bytes) override {
    while (!bytes.empty()) {
      const size_t take = std::min<size_t>(bytes.size(), kS3PartBytes - buffer_.size());
      buffer_.append(bytes.data(), take);
      bytes = bytes.subspan(take);
      if (buffer_.size() == kS3PartBytes) BKP_TRY_VOID(send_part());
    }
    return {};
  }

  Result<uint64_t> commit() override {
    if (!upload_) {
      BKP_TRY_VOID(client_.put_object(bucket_, key_, buffer_));
      sent_ = buffer_.size();
    } else {
      if (!buffer_.empty()) BKP_TRY_VOID(send_part());
      BKP_TRY_VOID(wait_part());
      BKP_TRY_VOID(upload_->complete());
    }
    committed_ = true;
    return sent_;
  }

 private:
  // Hands the full buffer to the part thread, once the part before it is up.
  Result<void> send_part() {
    BKP_TRY_VOID(wait_part());
    if (!upload_) upload_.emplace(BKP_TRY(S3MultipartUpload::begin(client_, bucket_, key_)));
    sending_.swap(buffer_);
    buffer_.clear();
    sent_ += sending_.size();
    part_ = std::async(std::launch::async, [this, n = ++parts_] {
      return upload_->upload_part(n, sending_);
    });
    return {};
  }

  // The part in flight's outcome (none: done).
  Result<void> wait_part() {
    if (!part_.valid()) return {};
    return part_.get();
  }

  S3Client client_;
  std::string bucket_, key_;
  std::string buffer_;   // the part being filled
  std::string sending_;  // the part being uploaded (the part thread's until part_ is ready)
  std::optional<S3MultipartUpload> upload_;  // borrows client_: declared after it
  std::future<Result<void>> part_;           // the upload of sending_
  int parts_ = 0;
  uint64_t sent_ = 0;  // bytes handed to parts (or the one PUT)
  bool committed_ = false;
};

// Ranged GETs of at least kS3ReadAhead bytes; the last one is kept for the reads that follow.
class S3Source final : public ByteSource {
 public:
  S3Source(S3Client client, std::string bucket, std::string key, uint64_t size, std::string where)
      : client_(std::move(client)), bucket_(std::move(bucket)), key_(std::move(key)), size_(size),
        where_(std::move(where)) {}

  uint64_t size() const override { return size_; }
  const std::string& where() const override { return where_; }

  Result<size_t> read_at(uint64_t offset, std::span<char> buf) override {
    size_t got = 0;
    while (got < buf.size() && offset + got < size_) {
      const uint64_t at = offset + got;
      if (at < window_at_ || at >= window_at_ + window_.size()) {
        const uint64_t want = std::max<uint64_t>(kS3ReadAhead, buf.size() - got);
        window_ = BKP_TRY(client_.get_range(bucket_, key_, at, std::min(want, size_ - at)));
        window_at_ = at;
        if (window_.empty()) return fail(EIO, where_ + ": shorter than its size");
      }
      const size_t n = std::min<size_t>(buf.size() - got, window_at_ + window_.size() - at);
      std::memcpy(buf.data() + got, window_.data() + (at - window_at_), n);
      got += n;
    }
    return got;
  }

 private:
  S3Client client_;
  std::string bucket_, key_;
  uint64_t size_;
  std::string where_;
  std::string window_;  // bytes [window_at_, window_at_ + window_.size()) of the object
  uint64_t window_at_ = 0;
};

}  // namespace

S3ArchiveStore::S3ArchiveStore(std::shared_ptr<const S3Credentials> credentials,
                               S3Location location, const std::string& volume_prefix)
    : credentials_(std::move(credentials)),
      bucket_(std::move(location.bucket)),
      prefix_(location.prefix + volume_prefix + "/"),
      where_(fmt::format("s3://{}/{}", bucket_, prefix_)) {}

Result<S3Client> S3ArchiveStore::client() const { return S3Client::create(*credentials_); }

std::string S3ArchiveStore::key(const std::string& id, ArchivePart part) const {
  return prefix_ + id + std::string(part_suffix(part));
}

Result<std::unique_ptr<ArchiveSink>> S3ArchiveStore::create(const std::string& id,
                                                            ArchivePart part) {
  return std::make_unique<S3Sink>(BKP_TRY(client()), bucket_, key(id, part));
}

Result<std::unique_ptr<ByteSource>> S3ArchiveStore::open(const std::string& id, ArchivePart part) {
  S3Client c = BKP_TRY(client());
  const std::string k = key(id, part);
  auto size = BKP_TRY(c.head_object(bucket_, k));
  if (!size) return fail(ENOENT, fmt::format("s3://{}/{}: no such object", bucket_, k));
  return std::make_unique<S3Source>(std::move(c), bucket_, k, *size,
                                    fmt::format("s3://{}/{}", bucket_, k));
}

Result<std::vector<StoredArchive>> S3ArchiveStore::list() {
  S3Client c = BKP_TRY(client());
  auto objects = BKP_TRY(c.list_objects(bucket_, prefix_));
  std::vector<StoredArchive> out;
  const std::string_view suffix = part_suffix(ArchivePart::kArchive);
  for (const auto& o : objects) {
    std::string_view name = std::string_view(o.key).substr(prefix_.size());
    if (name.size() <= suffix.size() || !name.ends_with(suffix) ||
        name.find('/') != std::string_view::npos) {
      continue;  // not one of this volume's archives
    }
    out.push_back(StoredArchive{std::string(name.substr(0, name.size() - suffix.size())), o.size});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id > b.id; });
  return out;
}

Result<void> S3ArchiveStore::remove(const std::string& id) {
  S3Client c = BKP_TRY(client());
  BKP_TRY_VOID(c.delete_object(bucket_, key(id, ArchivePart::kFileIds)));  // first: see local
  return c.delete_object(bucket_, key(id, ArchivePart::kArchive));
}

size_t S3ArchiveStore::remove_partial() {
  auto c = client();
  auto uploads = c.and_then([&](S3Client& s3) { return s3.list_uploads(bucket_, prefix_); });
  if (!uploads) {
    log::warn("snapshot store {}: listing unfinished uploads: {}", where_, uploads.error().message);
    return 0;
  }
  size_t n = 0;
  for (const auto& u : *uploads) {
    if (u.key.find('/', prefix_.size()) != std::string::npos) continue;  // another volume's
    if (auto aborted = c->abort_upload(bucket_, u.key, u.upload_id); !aborted) {
      log::warn("snapshot store {}: {}", where_, aborted.error().message);
      continue;
    }
    log::warn("removed partial snapshot s3://{}/{} (an earlier run was interrupted)", bucket_, u.key);
    ++n;
  }
  return n;
}

Result<void> prepare_bucket(const S3Credentials& credentials, const S3Location& location) {
  S3Client c = BKP_TRY(S3Client::create(credentials));
  return c.create_bucket(location.bucket);
}

}  // namespace bkp::server
