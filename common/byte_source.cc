// FileSource and the whole-source readers (see byte_source.h).
#include "common/byte_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace bkp {

Result<FileSource> FileSource::open(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return fail_errno("open " + path);
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return fail_errno("stat " + path);
  return FileSource(std::move(fd), static_cast<uint64_t>(st.st_size), path);
}

FileSource::FileSource(int fd, uint64_t size, std::string where)
    : fd_(fd), size_(size), where_(std::move(where)) {}

FileSource::FileSource(UniqueFd fd, uint64_t size, std::string where)
    : owned_(std::move(fd)), fd_(owned_.get()), size_(size), where_(std::move(where)) {}

Result<size_t> FileSource::read_at(uint64_t offset, std::span<char> buf) {
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::pread(fd_, buf.data() + got, buf.size() - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("read " + where_);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return got;
}

Result<void> read_all(ByteSource& source,
                      const std::function<Result<void>(std::span<const char>)>& take) {
  std::vector<char> buf(1 << 20);
  for (uint64_t at = 0; at < source.size();) {
    size_t n = BKP_TRY(source.read_at(at, buf));
    if (n == 0) return fail(EIO, source.where() + ": shorter than its size");
    BKP_TRY_VOID(take(std::span<const char>(buf.data(), n)));
    at += n;
  }
  return {};
}

Result<std::vector<PartDigest>> digest_source(ByteSource& source, uint64_t part_size) {
  PartHasher hasher(part_size);
  BKP_TRY_VOID(read_all(source, [&](std::span<const char> piece) -> Result<void> {
    hasher.feed(piece);
    return {};
  }));
  return hasher.finish();
}

}  // namespace bkp
