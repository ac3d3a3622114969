// See stream_ends.h.
#include "tests/testutil/stream_ends.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>

#include "common/changes/scan.h"
#include "common/net/messenger.h"
#include "common/stream/reconcile.h"
#include "common/unique_fd.h"

namespace bkp::testutil {

Result<UniqueFd> DirSource::open_file(const changes::FileRef& f) {
  for (const auto& e : std::filesystem::recursive_directory_iterator(root_)) {
    struct stat st{};
    if (lstat(e.path().c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_ino == f.id) {
      UniqueFd fd(::open(e.path().c_str(), O_RDONLY | O_CLOEXEC));
      if (fd) return fd;
    }
  }
  return fail(ENOENT, "gone");
}

Result<void> serve_stream(net::Conn& conn, stream::Receiver& receiver, changes::Applier& applier,
                          uint64_t instance, int timeout_ms, uint64_t* ops) {
  wire::HelloOk ok;
  ok.position = receiver.position(instance);
  if (!net::send(conn, ok) || !conn.flush()) return {};
  while (true) {
    auto f = conn.recv(timeout_ms);
    if (!f) return {};
    Result<void> r;
    if (f->type == wire::MsgType::kOp) {
      if (ops != nullptr) ++*ops;
      auto o = wire::decode_op(f->payload);
      r = o ? receiver.apply(*o) : Result<void>(tl::unexpected(o.error()));
    } else if (f->type == wire::MsgType::kWrite) {
      auto w = wire::decode_write(f->flags, f->payload);
      r = w ? receiver.write(*w) : Result<void>(tl::unexpected(w.error()));
    } else if (f->type == wire::MsgType::kManifestRequest) {
      r = stream::send_manifest(conn, applier);
    } else if (f->type == wire::MsgType::kDigestRequest) {
      auto q = wire::decode_digest_request(f->payload);
      r = q ? stream::send_digests(conn, applier, *q) : Result<void>(tl::unexpected(q.error()));
    } else if (f->type == wire::MsgType::kCommit) {
      auto c = wire::decode_commit(f->payload);
      auto n = c ? receiver.commit(*c) : Result<uint64_t>(tl::unexpected(c.error()));
      if (!n) return tl::unexpected(n.error());
      if (!net::send(conn, wire::Ack{*n}) || !conn.flush()) return {};
    }
    if (!r) return r;
  }
}

Result<void> send_tree(net::Conn& conn, stream::Sender& sender, changes::ChangeLog& log,
                       DirSource& data, changes::ShipCounters& counters,
                       const std::string& src_root, int timeout_ms) {
  auto ok = BKP_TRY(net::expect<wire::HelloOk>(conn, timeout_ms));
  if (sender.position(ok.position) == stream::Sender::Resume::kBaseline) {
    auto have = BKP_TRY(stream::fetch_manifest(conn, timeout_ms));
    UniqueFd root(::open(src_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) return fail_errno("open " + src_root);
    changes::ScanOptions options;
    options.have = &have;
    auto batch = BKP_TRY(changes::scan_tree(
        root.get(),
        [](int, const char*, const struct stat& st) {
          return std::optional<changes::FileRef>(changes::FileRef{st.st_ino, ""});
        },
        options));
    log.replace(std::move(batch));
    BKP_TRY_VOID(stream::narrow_by_digests(conn, log, data, timeout_ms));
  }
  while (sender.next() != nullptr) {
    BKP_TRY_VOID(sender.send(conn, data, counters));
    BKP_TRY_VOID(sender.await_ack(conn, timeout_ms));
  }
  return {};
}

}  // namespace bkp::testutil
