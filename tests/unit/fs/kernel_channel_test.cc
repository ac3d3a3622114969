// KernelChannel: what it notes of each request, and the one reply it changes (INIT's flags).
// Requests are byte strings built as the kernel lays them out; replies go through a pipe and
// are read back as the kernel would receive them.
#include "fs/kernel_channel.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "common/unique_fd.h"

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

}  // namespace
}  // namespace bkp::fs
