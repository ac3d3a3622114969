// The operation table and what every operation shares: connection setup and recording.
//
// libfuse calls plain C function pointers; each entry here is a captureless lambda that finds
// the Fs in the request's userdata and calls the member, so each operation lives in the file of
// its family (entry, namespace, file, dir, xattr) with access to the shared state.
//
// init chooses what the kernel may do on its own: splice where the transport allows it, but never
// the writeback cache — with it the kernel would coalesce and delay writes, and a write we never
// see is a change we never ship. Killing set-id bits is ours when the kernel offers
// FUSE_HANDLE_KILLPRIV_V2 (KernelChannel adds it to the INIT reply; kill_privileges.cc does the
// work), which flags each request whose caller lacks CAP_FSETID. The older HANDLE_KILLPRIV stays
// off: it carries no such flag, so we could not tell a root writer (who keeps the bits) from
// another, and V2 alone already spares the kernel's GETATTR before a set-id-clearing chown.
#include "fs/fs.h"

#include <fcntl.h>
#include <fmt/format.h>

#include "common/log.h"

namespace bkp::fs {
namespace {

Fs& self(fuse_req_t req) { return *static_cast<Fs*>(fuse_req_userdata(req)); }

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops o{};
  o.init = [](void* userdata, fuse_conn_info* conn) { static_cast<Fs*>(userdata)->init(conn); };
  o.lookup = [](fuse_req_t r, fuse_ino_t p, const char* n) { self(r).lookup(r, p, n); };
  o.forget = [](fuse_req_t r, fuse_ino_t i, uint64_t n) { self(r).forget(r, i, n); };
  o.forget_multi = [](fuse_req_t r, size_t c, fuse_forget_data* f) {
    self(r).forget_multi(r, c, f);
  };
  o.getattr = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r).getattr(r, i, fi); };
  o.setattr = [](fuse_req_t r, fuse_ino_t i, struct stat* a, int s, fuse_file_info* fi) {
    self(r).setattr(r, i, a, s, fi);
  };
  o.readlink = [](fuse_req_t r, fuse_ino_t i) { self(r).readlink(r, i); };
  o.statfs = [](fuse_req_t r, fuse_ino_t i) { self(r).statfs(r, i); };
  o.mkdir = [](fuse_req_t r, fuse_ino_t p, const char* n, mode_t m) { self(r).mkdir(r, p, n, m); };
  o.mknod = [](fuse_req_t r, fuse_ino_t p, const char* n, mode_t m, dev_t d) {
    self(r).mknod(r, p, n, m, d);
  };
  o.symlink = [](fuse_req_t r, const char* l, fuse_ino_t p, const char* n) {
    self(r).symlink(r, l, p, n);
  };
  o.link = [](fuse_req_t r, fuse_ino_t i, fuse_ino_t p, const char* n) {
    self(r).link(r, i, p, n);
  };
  o.unlink = [](fuse_req_t r, fuse_ino_t p, const char* n) { self(r).unlink(r, p, n); };
  o.rmdir = [](fuse_req_t r, fuse_ino_t p, const char* n) { self(r).rmdir(r, p, n); };
  o.rename = [](fuse_req_t r, fuse_ino_t p, const char* n, fuse_ino_t np, const char* nn,
                unsigned int f) { self(r).rename(r, p, n, np, nn, f); };
  o.create = [](fuse_req_t r, fuse_ino_t p, const char* n, mode_t m, fuse_file_info* fi) {
    self(r).create(r, p, n, m, fi);
  };
  o.open = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r).open(r, i, fi); };
  o.read = [](fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info* fi) {
    self(r).read(r, i, s, o, fi);
  };
  o.write_buf = [](fuse_req_t r, fuse_ino_t i, fuse_bufvec* b, off_t o, fuse_file_info* fi) {
    self(r).write_buf(r, i, b, o, fi);
  };
  o.copy_file_range = [](fuse_req_t r, fuse_ino_t ii, off_t oi, fuse_file_info* fii,
                         fuse_ino_t io, off_t oo, fuse_file_info* fio, size_t l, int f) {
    self(r).copy_file_range(r, ii, oi, fii, io, oo, fio, l, f);
  };
  o.flush = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r).flush(r, i, fi); };
  o.release = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r).release(r, i, fi); };
  o.fsync = [](fuse_req_t r, fuse_ino_t i, int d, fuse_file_info* fi) {
    self(r).fsync(r, i, d, fi);
  };
  o.fallocate = [](fuse_req_t r, fuse_ino_t i, int m, off_t o, off_t l, fuse_file_info* fi) {
    self(r).fallocate(r, i, m, o, l, fi);
  };
  o.lseek = [](fuse_req_t r, fuse_ino_t i, off_t o, int w, fuse_file_info* fi) {
    self(r).lseek(r, i, o, w, fi);
  };
  o.opendir = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r).opendir(r, i, fi); };
  o.readdir = [](fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info* fi) {
    self(r).readdir(r, i, s, o, fi, false);
  };
  o.readdirplus = [](fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info* fi) {
    self(r).readdir(r, i, s, o, fi, true);
  };
  o.releasedir = [](fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) {
    self(r).releasedir(r, i, fi);
  };
  o.fsyncdir = [](fuse_req_t r, fuse_ino_t i, int d, fuse_file_info* fi) {
    self(r).fsyncdir(r, i, d, fi);
  };
  o.setxattr = [](fuse_req_t r, fuse_ino_t i, const char* n, const char* v, size_t s, int f) {
    self(r).setxattr(r, i, n, v, s, f);
  };
  o.getxattr = [](fuse_req_t r, fuse_ino_t i, const char* n, size_t s) {
    self(r).getxattr(r, i, n, s);
  };
  o.listxattr = [](fuse_req_t r, fuse_ino_t i, size_t s) { self(r).listxattr(r, i, s); };
  o.removexattr = [](fuse_req_t r, fuse_ino_t i, const char* n) { self(r).removexattr(r, i, n); };
  return o;
}

fuse_custom_io make_custom_io() {
  fuse_custom_io io{};
  io.read = [](int fd, void* buf, size_t len, void* userdata) {
    return static_cast<Fs*>(userdata)->channel().read(fd, buf, len);
  };
  io.writev = [](int fd, iovec* iov, int count, void* userdata) {
    return static_cast<Fs*>(userdata)->channel().writev(fd, iov, count);
  };
  // Replies need no inspection (INIT's goes through writev), so data read from files keeps
  // being spliced into the device.
  io.splice_send = [](int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                      unsigned int flags, void* userdata) {
    ssize_t n = ::splice(fdin, offin, fdout, offout, len, flags);
    if (n >= 0) static_cast<Fs*>(userdata)->channel().count_reply();  // else libfuse writes it
    return n;
  };
  return io;
}

}  // namespace

const fuse_custom_io& Fs::custom_io() {
  static const fuse_custom_io kIo = make_custom_io();
  return kIo;
}

const fuse_lowlevel_ops& Fs::ops() {
  static const fuse_lowlevel_ops kOps = make_ops();
  return kOps;
}

void Fs::init(fuse_conn_info* conn) noexcept {
  for (unsigned cap : {FUSE_CAP_SPLICE_READ, FUSE_CAP_SPLICE_WRITE, FUSE_CAP_SPLICE_MOVE}) {
    if (conn->capable & cap) conn->want |= cap;
  }
  conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_HANDLE_KILLPRIV);
  log::info("fuse init: protocol {}.{}, capable {:#x}, want {:#x}", conn->proto_major,
            conn->proto_minor, conn->capable, conn->want);
  if (!channel_.offered_killpriv_v2()) {
    log::info("the kernel offers no FUSE_HANDLE_KILLPRIV_V2: it kills set-id bits itself, at "
              "the price of a GETXATTR before writes");
  }
}

std::string proc_path(int fd) { return fmt::format("/proc/self/fd/{}", fd); }

std::string describe(const wire::Op& op) {
  std::string s = fmt::format("{} '{}'", wire::op_name(op.kind), op.path);
  if (!op.target.empty()) s += fmt::format(" -> '{}'", op.target);
  if (op.id != 0) s += fmt::format(" id={:016x}", op.id);
  switch (op.kind) {
    case wire::OpKind::kMkdir:
    case wire::OpKind::kCreate:
    case wire::OpKind::kMknod:
    case wire::OpKind::kSymlink:
    case wire::OpKind::kAttr:
      s += fmt::format(" mode={:o} uid={} gid={}", op.mode, op.uid, op.gid);
      break;
    case wire::OpKind::kRename:
      s += fmt::format(" flags={}", op.flags);
      break;
    case wire::OpKind::kTruncate:
      s += fmt::format(" size={}", op.size);
      break;
    case wire::OpKind::kSetXattr:
    case wire::OpKind::kRemoveXattr:
      s += fmt::format(" name={} ({} bytes)", op.name, op.value.size());
      break;
    default:
      break;
  }
  return s;
}

void Fs::record(wire::Op op) {
  if (log::enabled(log::Level::kDebug)) log::debug("record {}", describe(op));
  log_.record(std::move(op));
}

void Fs::record_truncate(const Inode& inode, uint64_t size) {
  log::debug("record truncate id={:016x} size={}", inode.ref.id, size);
  log_.truncate(inode.ref, size);
}

void Fs::record_attrs(const Inode& inode) {
  log::debug("record attrs id={:016x}", inode.ref.id);
  log_.attrs(inode.ref);
}

void Fs::record_attr_locked(const std::string& path, const struct stat& st) {
  record(wire::attr_from_stat(path, 0, st));
}

void Fs::record_path_attr(Inode& inode, const struct stat& st) {
  InodeTable::Lock lock(table_);
  auto path = table_.path_locked(inode);
  if (!path) {
    log::debug("attr change of an inode without a known name not recorded");
    return;
  }
  record(wire::attr_from_stat(std::move(*path), 0, st));
}

}  // namespace bkp::fs
