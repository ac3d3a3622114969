// Encoding of a snapshot's file ids (see file_ids.h).
#include "server/file_ids.h"

#include <zstd.h>

#include <cstring>
#include <span>
#include <string_view>

namespace bkp::server {
namespace {

constexpr std::string_view kMagic = "bkp-file-ids 1\n";
// More would be a corrupt header: a volume of a billion files still decodes below it.
constexpr unsigned long long kMaxRecordsBytes = 64ull << 30;

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

}  // namespace

void FileIdsWriter::add(const std::string& path, FileIdRecord record) {
  put(records_, static_cast<uint32_t>(path.size()));
  records_ += path;
  put(records_, record.id);
  put(records_, record.source_ctime);
  ++count_;
}

Result<std::string> FileIdsWriter::finish() {
  std::string out(kMagic);
  out.resize(kMagic.size() + ZSTD_compressBound(records_.size()));
  size_t n = ZSTD_compress(out.data() + kMagic.size(), out.size() - kMagic.size(), records_.data(),
                           records_.size(), 3);
  if (ZSTD_isError(n)) return fail(EIO, std::string("compress file ids: ") + ZSTD_getErrorName(n));
  out.resize(kMagic.size() + n);
  records_.clear();
  records_.shrink_to_fit();
  return out;
}

namespace {

Result<FileIds> decode(std::span<const char> bytes) {
  auto bad = [](const std::string& why) { return fail(EBADMSG, "file ids: " + why); };
  if (bytes.size() < kMagic.size() || std::memcmp(bytes.data(), kMagic.data(), kMagic.size()) != 0) {
    return bad("not a file ids object");
  }
  bytes = bytes.subspan(kMagic.size());
  unsigned long long raw = ZSTD_getFrameContentSize(bytes.data(), bytes.size());
  if (raw == ZSTD_CONTENTSIZE_ERROR || raw == ZSTD_CONTENTSIZE_UNKNOWN || raw > kMaxRecordsBytes) {
    return bad("the compressed records are damaged");
  }
  std::string records(raw, '\0');
  size_t n = ZSTD_decompress(records.data(), records.size(), bytes.data(), bytes.size());
  if (ZSTD_isError(n) || n != raw) return bad("the compressed records are damaged");
  FileIds out;
  size_t at = 0;
  auto take = [&](void* v, size_t size) {
    if (records.size() - at < size) return false;
    std::memcpy(v, records.data() + at, size);
    at += size;
    return true;
  };
  while (at < records.size()) {
    uint32_t length = 0;
    FileIdRecord r;
    if (!take(&length, sizeof length) || records.size() - at < length) return bad("a torn record");
    std::string path = records.substr(at, length);
    at += length;
    if (!take(&r.id, sizeof r.id) || !take(&r.source_ctime, sizeof r.source_ctime)) {
      return bad("a torn record");
    }
    out.emplace(std::move(path), r);
  }
  return out;
}

}  // namespace

Result<void> store_file_ids(ArchiveStore& store, const std::string& id, FileIdsWriter& ids) {
  const std::string bytes = BKP_TRY(ids.finish());
  auto sink = BKP_TRY(store.create(id, ArchivePart::kFileIds));
  BKP_TRY_VOID(sink->write(bytes));
  BKP_TRY_VOID(sink->commit());
  return {};
}

Result<std::optional<FileIds>> load_file_ids(ArchiveStore& store, const std::string& id) {
  auto object = store.open(id, ArchivePart::kFileIds);
  if (!object && object.error().code == ENOENT) return std::nullopt;
  if (!object) return tl::unexpected(object.error());
  std::string encoded;
  BKP_TRY_VOID(read_all(**object, [&](std::span<const char> bytes) -> Result<void> {
    encoded.append(bytes.data(), bytes.size());
    return {};
  }));
  return std::optional<FileIds>(BKP_TRY(decode(encoded)));
}

}  // namespace bkp::server
