// See stream_ends.h.
#include "tests/testutil/stream_ends.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <filesystem>
#include <thread>

#include "common/changes/scan.h"
#include "common/net/messenger.h"
#include "common/path.h"
#include "common/stream/reconcile.h"
#include "common/unique_fd.h"
#include "tests/testutil/write_of.h"

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
                       changes::DataSource& data, changes::ShipCounters& counters,
                       OnBaseline on_baseline, const std::string& src_root, int timeout_ms) {
  auto ok = BKP_TRY(net::expect<wire::HelloOk>(conn, timeout_ms));
  if (sender.position(ok.position) == stream::Sender::Resume::kBaseline) {
    if (on_baseline == OnBaseline::kRefuse) return fail(EPROTO, kUnexpectedBaseline);
    if (on_baseline == OnBaseline::kSendLog) {
      // The baseline of the empty tree (sync-begin, sync-end), then the log: every change since.
      changes::Batch since_empty = log.take();
      since_empty.ops.insert(since_empty.ops.begin(), {wire::Op{.kind = wire::OpKind::kSyncBegin},
                                                       wire::Op{.kind = wire::OpKind::kSyncEnd}});
      log.replace(std::move(since_empty));
    }
    if (on_baseline == OnBaseline::kScan) {
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
  }
  while (sender.next() != nullptr) {
    BKP_TRY_VOID(sender.send(conn, data, counters));
    BKP_TRY_VOID(sender.await_ack(conn, timeout_ms));
  }
  return {};
}

Result<std::unique_ptr<Sink>> Sink::open(std::string dir, std::string tree_rel,
                                         std::string ids_rel) {
  std::unique_ptr<Sink> sink(new Sink(std::move(dir), std::move(tree_rel), std::move(ids_rel)));
  BKP_TRY_VOID(sink->restart(Stop::kClean));  // nothing to stop yet
  return sink;
}

Result<void> Sink::restart(Stop how) {
  if (receiver_ && how == Stop::kKilled) receiver_->abandon();
  receiver_.reset();
  applier_.reset();
  applier_ = BKP_TRY(changes::Applier::open(dir_, tree_rel_, ids_rel_));
  receiver_ = BKP_TRY(stream::Receiver::open(dir_, *applier_));
  return {};
}

Result<void> Sink::serve(net::Conn& conn, uint64_t instance, int timeout_ms) {
  return serve_stream(conn, *receiver_, *applier_, instance, timeout_ms, &ops_);
}

Result<ConnPair> conn_pair() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return fail_errno("socketpair");
  UniqueFd a_fd(sv[0]), b_fd(sv[1]);
  ConnPair pair;
  pair.a = BKP_TRY(net::Conn::open(std::move(a_fd)));
  pair.b = BKP_TRY(net::Conn::open(std::move(b_fd)));
  return pair;
}

Result<int> deliver(Sink& sink, const Delivery& d) {
  for (int attempt = 0; attempt < d.connections; ++attempt) {
    auto [a, b] = BKP_TRY(conn_pair());
    if (attempt == 0) a->cut_after(d.cut_after);
    Result<void> served;
    std::thread rx([&, &b = b] { served = sink.serve(*b, d.instance, d.timeout_ms); });
    auto sent = send_tree(*a, d.sender, d.log, d.data, d.counters, d.on_baseline, d.src_root,
                          d.timeout_ms);
    ::shutdown(a->fd(), SHUT_RDWR);
    rx.join();
    if (!served) return tl::unexpected(served.error().wrap("receiver"));
    if (!sent && sent.error().message == kUnexpectedBaseline) return tl::unexpected(sent.error());
    if (sent) return attempt + 1;
    if (d.restart_after_cut) BKP_TRY_VOID(sink.restart(Sink::Stop::kKilled));
  }
  return fail(EIO, "not delivered after " + std::to_string(d.connections) + " connections");
}

Result<std::unique_ptr<LoggedTree>> LoggedTree::open(const std::string& base) {
  std::unique_ptr<LoggedTree> t(new LoggedTree(base + "/src"));
  t->applier_ = BKP_TRY(changes::Applier::open(base, "src", "src-ids"));
  return t;
}

// What rename(2), link(2), mkdir(2), mknod(2), symlink(2), open(O_CREAT|O_EXCL), unlink(2) and
// rmdir(2) would refuse on the application's side, where the Applier (a receiver) would instead
// replace a stale entry: such an operation never reaches a node's log.
Result<void> LoggedTree::refused(const wire::Op& o) const {
  int fd = applier_->tree_fd();
  auto lstat_at = [fd](const std::string& rel, struct stat& st) {
    return !rel.empty() && fstatat(fd, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  };
  auto empty_dir = [this](const std::string& rel) {  // rel is a directory (lstat'ed)
    std::error_code ec;
    return std::filesystem::is_empty(root_ + "/" + rel, ec) && !ec;
  };
  struct stat from{}, to{};
  switch (o.kind) {
    case wire::OpKind::kMkdir:
    case wire::OpKind::kCreate:
    case wire::OpKind::kMknod:
    case wire::OpKind::kSymlink:
    case wire::OpKind::kLink:
      if (lstat_at(o.path, to)) return fail(EEXIST, o.path);
      return {};
    case wire::OpKind::kRmdir:
      if (lstat_at(o.path, from) && S_ISDIR(from.st_mode) && !empty_dir(o.path)) {
        return fail(ENOTEMPTY, o.path);
      }
      return {};
    case wire::OpKind::kRename: {
      if (!lstat_at(o.path, from)) return fail(ENOENT, o.path);
      bool exists = lstat_at(o.target, to);
      if ((o.flags & RENAME_NOREPLACE) && exists) return fail(EEXIST, o.target);
      if ((o.flags & RENAME_EXCHANGE) && !exists) return fail(ENOENT, o.target);
      if (!exists || (o.flags & RENAME_EXCHANGE) || from.st_ino == to.st_ino) return {};
      if (S_ISDIR(from.st_mode) != S_ISDIR(to.st_mode)) {
        return fail(S_ISDIR(to.st_mode) ? EISDIR : ENOTDIR, o.target);
      }
      if (S_ISDIR(to.st_mode) && !empty_dir(o.target)) return fail(ENOTEMPTY, o.target);
      return {};
    }
    default:
      return {};
  }
}

Result<void> LoggedTree::apply(const wire::Op& o) {
  BKP_TRY_VOID(refused(o));
  BKP_TRY_VOID(applier_->apply(o));
  switch (o.kind) {
    case wire::OpKind::kTruncate: log_.truncate({o.id, ""}, o.size); break;
    case wire::OpKind::kPunch: log_.punch({o.id, ""}, o.offset, o.size); break;
    case wire::OpKind::kAllocate: log_.allocate({o.id, ""}, o.flags, o.offset, o.size); break;
    case wire::OpKind::kCreate:
      log_.record(o);
      log_.attrs({o.id, ""});
      break;
    default: log_.record(o);
  }
  bool data_only = o.kind == wire::OpKind::kTruncate || o.kind == wire::OpKind::kPunch ||
                   o.kind == wire::OpKind::kAllocate;
  if (!data_only && o.kind != wire::OpKind::kSetXattr) {
    attr_of(std::string(parent_of(o.path)));
    if (o.kind == wire::OpKind::kRename) attr_of(std::string(parent_of(o.target)));
  }
  // Creation ops carry no times (a symlink's carries its own): backupfs follows them with the
  // new entry's attributes.
  if (o.kind == wire::OpKind::kMkdir || o.kind == wire::OpKind::kMknod) attr_of(o.path);
  return {};
}

Result<void> LoggedTree::write(uint64_t id, uint64_t offset, std::string_view data) {
  BKP_TRY_VOID(applier_->write(write_of(id, offset, data)));
  log_.write({id, ""}, offset, data.size());
  return {};
}

void LoggedTree::attr_of(const std::string& rel) {
  struct stat st{};
  int fd = applier_->tree_fd();
  int rc = rel.empty() ? fstat(fd, &st) : fstatat(fd, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW);
  if (rc == 0) log_.record(wire::attr_from_stat(rel, 0, st));
}

}  // namespace bkp::testutil
