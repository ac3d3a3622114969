// Open files with no name left: the keeper-worker channel and both ends of it (orphans.h).
#include "fs/orphans.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "fs/fs.h"

namespace bkp::fs {
namespace {

constexpr int kChannelBuffer = 8 << 20;  // room for kMaxHeld kHeld messages queued at once

// Sends m with fd attached (fd >= 0). Returns 0 or an errno.
int send_message(int channel, const ChannelMessage& m, int fd) {
  iovec iov{const_cast<ChannelMessage*>(&m), sizeof(m)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  while (::sendmsg(channel, &msg, MSG_NOSIGNAL) < 0) {
    if (errno != EINTR) return errno;
  }
  return 0;
}

// Receives one message and the descriptor it carries, if any. 0, an errno, or -1 at the end
// (the other side closed).
int receive_message(int channel, ChannelMessage* m, UniqueFd* fd) {
  iovec iov{m, sizeof(*m)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  while ((n = ::recvmsg(channel, &msg, MSG_CMSG_CLOEXEC)) < 0) {
    if (errno != EINTR) return errno;
  }
  if (n == 0) return -1;
  fd->reset();
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int received;
      std::memcpy(&received, CMSG_DATA(c), sizeof(int));
      fd->reset(received);
    }
  }
  return n == sizeof(*m) ? 0 : EPROTO;
}

}  // namespace

Result<std::pair<UniqueFd, UniqueFd>> make_channel() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
    return fail_errno("socketpair");
  }
  UniqueFd keeper(sv[0]), worker(sv[1]);
  const int size = kChannelBuffer;
  // As root the buffer may exceed the system's default maximum; elsewhere it is only smaller.
  if (::setsockopt(keeper.get(), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0) {
    ::setsockopt(keeper.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  }
  if (::fcntl(keeper.get(), F_SETFL, O_NONBLOCK) < 0) return fail_errno("channel O_NONBLOCK");
  return std::pair{std::move(keeper), std::move(worker)};
}

// ---------------------------------------------------------------------------- HeldFiles

void HeldFiles::send_all(int channel) const {
  for (const auto& [node, fd] : held_) {
    if (int err = send_message(channel, {ChannelKind::kHeld, 0, node}, fd.get())) {
      log::warn("cannot hand the worker the open file of node {} that has no name left: {}",
                node, std::strerror(err));
    }
  }
  if (int err = send_message(channel, {ChannelKind::kEnd}, -1)) {
    log::warn("worker channel: {}", std::strerror(err));
  }
}

bool HeldFiles::receive(int channel, bool* closed) {
  bool serving = false;
  for (;;) {
    ChannelMessage m{};
    UniqueFd fd;
    const int res = receive_message(channel, &m, &fd);
    if (res == EAGAIN) return serving;
    if (res != 0) {
      *closed = true;
      return serving;
    }
    switch (m.kind) {
      case ChannelKind::kServing:
        serving = true;
        break;
      case ChannelKind::kHold:
        if (!fd) break;
        if (held_.size() >= kMaxHeld && !held_.contains(m.node)) {
          log::warn("{} open files without a name are held already; the one of node {} will "
                    "answer ESTALE after a worker restart", held_.size(), m.node);
          break;
        }
        held_[m.node] = std::move(fd);
        break;
      case ChannelKind::kDrop:
        held_.erase(m.node);
        break;
      default:
        log::warn("worker channel: unexpected message {}", static_cast<uint32_t>(m.kind));
    }
  }
}

// ---------------------------------------------------------------------------- Orphans

void Orphans::send(ChannelMessage m, int fd) {
  if (channel_ < 0) return;
  if (int err = send_message(channel_, m, fd)) {
    log::warn("keeper channel: {}", std::strerror(err));
  }
}

Result<void> Orphans::receive() {
  if (channel_ < 0) return {};
  std::lock_guard lock(mu_);
  for (;;) {
    ChannelMessage m{};
    UniqueFd fd;
    const int res = receive_message(channel_, &m, &fd);
    if (res != 0) return fail(res < 0 ? EPIPE : res, "keeper channel: held files");
    if (m.kind == ChannelKind::kEnd) break;
    if (m.kind == ChannelKind::kHeld && fd) held_[m.node] = std::move(fd);
  }
  if (!held_.empty()) {
    log::info("takeover: {} open file(s) with no name left, held by the keeper", held_.size());
  }
  return {};
}

void Orphans::drop_unopened() {
  std::lock_guard lock(mu_);
  for (auto it = held_.begin(); it != held_.end();) {
    if (opens_.contains(it->first)) {
      ++it;
      continue;
    }
    send({ChannelKind::kDrop, 0, it->first});
    it = held_.erase(it);
  }
}

void Orphans::serving() { send({ChannelKind::kServing}); }

void Orphans::opened(uint64_t node) {
  std::lock_guard lock(mu_);
  ++opens_[node];
}

void Orphans::released(uint64_t node) {
  std::lock_guard lock(mu_);
  auto it = opens_.find(node);
  if (it == opens_.end() || --it->second > 0) return;
  opens_.erase(it);
  if (held_.erase(node) > 0) send({ChannelKind::kDrop, 0, node});
}

bool Orphans::is_open(uint64_t node) {
  std::lock_guard lock(mu_);
  return opens_.contains(node);
}

void Orphans::hold_if_nameless(uint64_t node, UniqueFd fd) {
  struct stat st;
  if (::fstat(fd.get(), &st) < 0 || st.st_nlink != 0) return;
  std::lock_guard lock(mu_);
  if (!opens_.contains(node)) return;  // released meanwhile
  send({ChannelKind::kHold, 0, node}, fd.get());
  held_[node] = std::move(fd);
}

std::optional<Result<UniqueFd>> Orphans::reopen(uint64_t node, int flags) {
  std::lock_guard lock(mu_);
  auto it = held_.find(node);
  if (it == held_.end()) return std::nullopt;
  UniqueFd fd(::open(proc_path(it->second.get()).c_str(), flags | O_CLOEXEC));
  if (!fd) return Result<UniqueFd>(fail_errno("reopen a file with no name left"));
  return Result<UniqueFd>(std::move(fd));
}

}  // namespace bkp::fs
