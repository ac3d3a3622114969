// KernelChannel: what it notes of each request, the one reply it changes (INIT's flags), and a
// takeover: the INIT exchange kept by the first worker, replayed to the next (whose reply must
// not reach the kernel, followed by FUSE_NOTIFY_RESEND), and a stop that waits for the replies
// to the requests read. Requests are byte strings built as the kernel lays them out; the
// "device" is a pipe, read back as the kernel would receive what is written to it.
#include "fs/kernel_channel.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "common/unique_fd.h"
#include "fs/takeover.h"

namespace bkp::fs {
namespace {

template <typename Arg>
std::string request(uint32_t opcode, uint64_t unique, uint64_t nodeid, const Arg& arg) {
  fuse_in_header in{};
  in.len = sizeof(in) + sizeof(arg);
  in.opcode = opcode;
  in.unique = unique;
  in.nodeid = nodeid;
  std::string bytes(reinterpret_cast<const char*>(&in), sizeof(in));
  bytes.append(reinterpret_cast<const char*>(&arg), sizeof(arg));
  return bytes;
}

std::string init_request(uint64_t unique, uint32_t flags) {
  fuse_init_in init{};
  init.major = 7;
  init.minor = 38;
  init.flags = flags;
  return request(FUSE_INIT, unique, 0, init);
}

class KernelChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    read_end_.reset(fds[0]);
    write_end_.reset(fds[1]);
  }

  void note(const std::string& bytes) { channel_.note_request(bytes.data(), bytes.size()); }

  // Writes a reply (header + arg) through the channel and returns the flags the kernel gets.
  uint32_t reply_init_flags(uint64_t unique, uint32_t flags, int32_t error = 0) {
    fuse_init_out arg{};
    arg.major = 7;
    arg.minor = 38;
    arg.flags = flags;
    fuse_out_header out{static_cast<uint32_t>(sizeof(out) + sizeof(arg)), error, unique};
    iovec iov[2] = {{&out, sizeof(out)}, {&arg, sizeof(arg)}};
    EXPECT_EQ(channel_.writev(write_end_.get(), iov, 2),
              static_cast<ssize_t>(sizeof(out) + sizeof(arg)));
    char buf[sizeof(out) + sizeof(arg)];
    EXPECT_EQ(::read(read_end_.get(), buf, sizeof(buf)), static_cast<ssize_t>(sizeof(buf)));
    fuse_init_out sent;
    std::memcpy(&sent, buf + sizeof(out), sizeof(sent));
    EXPECT_EQ(arg.flags, flags) << "the caller's buffer must stay untouched";
    return sent.flags;
  }

  KernelChannel channel_;
  UniqueFd read_end_, write_end_;
};

TEST_F(KernelChannelTest, InitReplyGetsKillprivV2WhenTheKernelOffersIt) {
  note(init_request(2, FUSE_ASYNC_READ | FUSE_HANDLE_KILLPRIV_V2));
  EXPECT_TRUE(channel_.offered_killpriv_v2());
  EXPECT_FALSE(channel_.killpriv_v2());
  EXPECT_EQ(reply_init_flags(2, FUSE_ASYNC_READ), FUSE_ASYNC_READ | FUSE_HANDLE_KILLPRIV_V2);
  EXPECT_TRUE(channel_.killpriv_v2());
  // Only INIT's reply: a later reply that happens to look alike is passed as it is.
  EXPECT_EQ(reply_init_flags(2, FUSE_ASYNC_READ), FUSE_ASYNC_READ);
}

TEST_F(KernelChannelTest, InitReplyIsUntouchedWhenNotOffered) {
  note(init_request(2, FUSE_ASYNC_READ));
  EXPECT_FALSE(channel_.offered_killpriv_v2());
  EXPECT_EQ(reply_init_flags(2, FUSE_ASYNC_READ), FUSE_ASYNC_READ);
  EXPECT_FALSE(channel_.killpriv_v2());
}

TEST_F(KernelChannelTest, OtherRepliesAndFailedInitAreUntouched) {
  note(init_request(2, FUSE_HANDLE_KILLPRIV_V2));
  EXPECT_EQ(reply_init_flags(4, 0), 0u);
  EXPECT_EQ(reply_init_flags(2, 0, -EPROTO), 0u);
  EXPECT_FALSE(channel_.killpriv_v2());
}

TEST_F(KernelChannelTest, NotesTheKillFlagsLibfuseDrops) {
  fuse_write_in write{};
  write.write_flags = FUSE_WRITE_KILL_SUIDGID;
  note(request(FUSE_WRITE, 10, 42, write));
  EXPECT_TRUE(KernelChannel::current().kill_suidgid);
  EXPECT_TRUE(KernelChannel::current().is(FUSE_WRITE, 42));
  EXPECT_FALSE(KernelChannel::current().is(FUSE_WRITE, 43));

  write.write_flags = 0;
  note(request(FUSE_WRITE, 12, 42, write));
  EXPECT_FALSE(KernelChannel::current().kill_suidgid);

  fuse_setattr_in setattr{};
  setattr.valid = FATTR_SIZE | FATTR_KILL_SUIDGID;
  note(request(FUSE_SETATTR, 14, 7, setattr));
  EXPECT_TRUE(KernelChannel::current().kill_suidgid);
  EXPECT_EQ(KernelChannel::current().setattr_valid, FATTR_SIZE | FATTR_KILL_SUIDGID);

  fuse_open_in open{};
  open.open_flags = FUSE_OPEN_KILL_SUIDGID;
  note(request(FUSE_OPEN, 16, 7, open));
  EXPECT_TRUE(KernelChannel::current().is(FUSE_OPEN, 7));
  EXPECT_TRUE(KernelChannel::current().kill_suidgid);

  fuse_create_in create{};
  create.open_flags = FUSE_OPEN_KILL_SUIDGID;
  note(request(FUSE_CREATE, 18, 1, create));
  EXPECT_TRUE(KernelChannel::current().is(FUSE_CREATE, 1));
  EXPECT_TRUE(KernelChannel::current().kill_suidgid);
}

TEST_F(KernelChannelTest, ATruncatedRequestLeavesNoStaleNote) {
  fuse_write_in write{};
  write.write_flags = FUSE_WRITE_KILL_SUIDGID;
  note(request(FUSE_WRITE, 10, 42, write));
  std::string cut = request(FUSE_WRITE, 12, 42, write).substr(0, sizeof(fuse_in_header) + 8);
  note(cut);
  EXPECT_FALSE(KernelChannel::current().kill_suidgid);
  note(std::string(8, '\0'));
  EXPECT_EQ(KernelChannel::current().opcode, 0u);
}

UniqueFd memfd() { return UniqueFd(::memfd_create("channel-test", MFD_CLOEXEC)); }
UniqueFd dup_of(const UniqueFd& fd) { return UniqueFd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0)); }

// What is waiting in the pipe, without blocking.
std::string drain(int fd) {
  std::string got;
  char buf[4096];
  for (pollfd p{fd, POLLIN, 0}; ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN);) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

TEST_F(KernelChannelTest, ATakeoverReplaysTheInitExchangeAndAsksForTheRestAgain) {
  UniqueFd session = memfd();
  const std::string init = init_request(2, FUSE_ASYNC_READ | FUSE_HANDLE_KILLPRIV_V2);
  {
    auto store = SessionStore::open(dup_of(session));
    ASSERT_TRUE(store);
    channel_.attach(&*store);
    ASSERT_EQ(::write(write_end_.get(), init.data(), init.size()),
              static_cast<ssize_t>(init.size()));
    std::string buf(4096, '\0');
    ASSERT_EQ(channel_.read(read_end_.get(), buf.data(), buf.size()),
              static_cast<ssize_t>(init.size()));
    EXPECT_EQ(reply_init_flags(2, FUSE_ASYNC_READ), FUSE_ASYNC_READ | FUSE_HANDLE_KILLPRIV_V2);
  }
  auto store = SessionStore::open(dup_of(session));
  ASSERT_TRUE(store);
  EXPECT_EQ(store->generation(), 2u);
  EXPECT_EQ(store->init_request(), init);

  KernelChannel next;
  next.attach(&*store);
  // The first read is the stored INIT; the device is not read (nothing is waiting on it).
  std::string buf(4096, '\0');
  ASSERT_EQ(next.read(read_end_.get(), buf.data(), buf.size()), static_cast<ssize_t>(init.size()));
  EXPECT_EQ(buf.substr(0, init.size()), init);
  EXPECT_TRUE(KernelChannel::current().is(FUSE_INIT, 0));
  // libfuse's reply is swallowed; the kernel gets FUSE_NOTIFY_RESEND instead.
  fuse_init_out arg{};
  arg.major = 7;
  arg.minor = 38;
  arg.flags = FUSE_ASYNC_READ;
  fuse_out_header out{static_cast<uint32_t>(sizeof(out) + sizeof(arg)), 0, 2};
  iovec iov[2] = {{&out, sizeof(out)}, {&arg, sizeof(arg)}};
  EXPECT_EQ(next.writev(write_end_.get(), iov, 2), static_cast<ssize_t>(sizeof(out) + sizeof(arg)));
  std::string sent = drain(read_end_.get());
  ASSERT_EQ(sent.size(), sizeof(fuse_out_header));
  fuse_out_header notify;
  std::memcpy(&notify, sent.data(), sizeof(notify));
  EXPECT_EQ(notify.len, sizeof(fuse_out_header));
  EXPECT_EQ(notify.error, 7);  // FUSE_NOTIFY_RESEND
  EXPECT_EQ(notify.unique, 0u);
  EXPECT_TRUE(next.killpriv_v2()) << "in force since the first worker's INIT";
  EXPECT_TRUE(next.wait_initialised(std::chrono::milliseconds(0)));
}

TEST_F(KernelChannelTest, AResentRequestIsNotedAsResent) {
  fuse_open_in open{};
  note(request(FUSE_OPEN, 16, 7, open));
  EXPECT_FALSE(KernelChannel::current().resent);
  note(request(FUSE_OPEN, 16 | (uint64_t{1} << 63), 7, open));
  EXPECT_TRUE(KernelChannel::current().resent);
  EXPECT_TRUE(KernelChannel::current().is(FUSE_OPEN, 7));
}

TEST_F(KernelChannelTest, StopReadingWaitsForTheRepliesToWhatWasRead) {
  // INIT first (the gate opens once it is answered), then two requests read and unanswered.
  const std::string init = init_request(2, 0);
  fuse_open_in open{};
  const std::string reqs = init + request(FUSE_OPEN, 4, 7, open) + request(FUSE_OPEN, 6, 8, open);
  ASSERT_EQ(::write(write_end_.get(), reqs.data(), reqs.size()), static_cast<ssize_t>(reqs.size()));
  std::string buf(4096, '\0');
  // A pipe is a stream: read exactly one request at a time.
  ASSERT_EQ(channel_.read(read_end_.get(), buf.data(), init.size()),
            static_cast<ssize_t>(init.size()));
  reply_init_flags(2, 0);
  const size_t one = request(FUSE_OPEN, 4, 7, open).size();
  ASSERT_EQ(channel_.read(read_end_.get(), buf.data(), one), static_cast<ssize_t>(one));
  ASSERT_EQ(channel_.read(read_end_.get(), buf.data(), one), static_cast<ssize_t>(one));
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    channel_.stop_reading(std::chrono::seconds(20));
    stopped = true;
  });
  auto answer = [&](uint64_t unique) {
    fuse_out_header out{sizeof(fuse_out_header), 0, unique};
    iovec iov[1] = {{&out, sizeof(out)}};
    channel_.writev(write_end_.get(), iov, 1);
  };
  answer(4);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // a chance to return too early
  EXPECT_FALSE(stopped) << "stopped with a request still unanswered";
  answer(6);
  stopper.join();
  EXPECT_TRUE(stopped);
}

}  // namespace
}  // namespace bkp::fs
