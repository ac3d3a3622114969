// See archive_reader.h.
#include "server/archive_reader.h"

namespace bkp::server {

SourceReader::SourceReader(ByteSource& source, Seen seen)
    : source_(source), seen_(std::move(seen)), buf_(1 << 20) {}

Result<ReadArchivePtr> SourceReader::open() {
  ReadArchivePtr a(archive_read_new());
  if (!a) return fail(ENOMEM, "libarchive: out of memory");
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  if (archive_read_open(a.get(), this, nullptr, &SourceReader::read, nullptr) != ARCHIVE_OK) {
    return tl::unexpected(complaint(archive_error_string(a.get())));
  }
  return a;
}

Result<void> SourceReader::drain() {
  while (BKP_TRY(next()) > 0) {
  }
  return {};
}

Error SourceReader::complaint(std::string what) const {
  if (error_) return *error_;
  return Error{EBADMSG, std::move(what)};
}

la_ssize_t SourceReader::read(archive* a, void* self, const void** out) noexcept {
  auto* r = static_cast<SourceReader*>(self);
  auto n = r->next();
  if (!n) {
    archive_set_error(a, n.error().code, "%s", n.error().message.c_str());
    return -1;
  }
  *out = r->buf_.data();
  return static_cast<la_ssize_t>(*n);
}

Result<size_t> SourceReader::next() {
  if (at_ >= source_.size()) return size_t{0};
  auto n = source_.read_at(at_, buf_);
  if (!n) {
    error_ = n.error();
    return tl::unexpected(n.error());
  }
  if (*n == 0) {
    error_ = Error{EIO, source_.where() + ": shorter than its size"};
    return tl::unexpected(*error_);
  }
  if (seen_) seen_(std::span<const char>(buf_.data(), *n));
  at_ += *n;
  return *n;
}

}  // namespace bkp::server
