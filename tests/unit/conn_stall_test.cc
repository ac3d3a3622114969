// A live peer that stops taking part cannot hold a Conn's thread forever (common/net/conn.h):
// a send the peer never reads fails after the stall limit, and so does a receive of a frame the
// peer began and never finished; a peer that is idle between frames is left to the caller's own
// timeout, and a peer that reads along is never cut. Over a real socket pair, with the limit
// shortened per connection (set_stall_ms). Should the limit not work, a watchdog shuts the socket
// down after 30 s, so the test fails with another error instead of hanging.
#include "common/net/conn.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "common/net/messenger.h"
#include "tests/testutil/stream_ends.h"

namespace bkp::net {
namespace {

class ConnStallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pair = testutil::conn_pair();
    ASSERT_TRUE(pair) << pair.error().message;
    us_ = std::move(pair->a);
    peer_ = std::move(pair->b);
    us_->set_stall_ms(300);
    watchdog_ = std::thread([this] {
      std::unique_lock lock(mu_);
      if (!cv_.wait_for(lock, std::chrono::seconds(30), [this] { return done_; })) {
        ::shutdown(us_->fd(), SHUT_RDWR);
      }
    });
  }

  void TearDown() override {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
  }

  // More than any socket buffer holds: the send cannot finish unless the peer reads.
  Result<void> send_a_lot() {
    std::vector<uint8_t> chunk(1u << 20, 0x5a);
    for (int i = 0; i < 64; ++i) {
      if (auto r = us_->send(wire::MsgType::kPing, 0, chunk); !r) return r;
    }
    return us_->flush();
  }

  std::unique_ptr<Conn> us_, peer_;
  std::thread watchdog_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

TEST_F(ConnStallTest, ASendThePeerNeverReadsFails) {
  auto sent = send_a_lot();
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code, ETIMEDOUT);
  EXPECT_NE(sent.error().message.find("the peer took nothing for 0.3 s"), std::string::npos)
      << sent.error().message;
}

TEST_F(ConnStallTest, ASendThePeerReadsAlongSucceeds) {
  us_->set_stall_ms(10000);
  std::thread reader([&] {
    for (int i = 0; i < 64; ++i) {
      auto frame = peer_->recv_view(10000);
      ASSERT_TRUE(frame) << frame.error().message;
    }
  });
  auto sent = send_a_lot();
  reader.join();
  EXPECT_TRUE(sent) << sent.error().message;
}

TEST_F(ConnStallTest, AFrameBegunAndNeverFinishedFailsWhateverTheCallersTimeout) {
  const uint8_t part[10] = {};  // the first 10 bytes of a frame header, and nothing more
  ASSERT_EQ(::write(peer_->fd(), part, sizeof part), static_cast<ssize_t>(sizeof part));
  auto frame = us_->recv_view(-1);
  ASSERT_FALSE(frame);
  EXPECT_EQ(frame.error().code, ETIMEDOUT);
  EXPECT_NE(frame.error().message.find("stopped in the middle of a frame for 0.3 s"),
            std::string::npos)
      << frame.error().message;
}

// A peer that trickled a frame a byte at a time, each byte within the stall limit, held the
// receiving thread as long as it liked (a known limit until 2026-12-02): the whole frame is now
// due within the stall limit plus its size at kMinFrameRate.
TEST_F(ConnStallTest, AFrameTrickledAByteAtATimeFails) {
  us_->set_stall_ms(2000);  // each byte comes well within it, even on a loaded machine
  std::vector<uint8_t> frame;
  wire::encode_frame(wire::MsgType::kPing, 0, 1, std::vector<uint8_t>(1024, 0), frame);
  std::atomic<bool> stop{false};
  std::thread trickler([&] {
    for (size_t i = 0; i < frame.size() && !stop; ++i) {
      if (::write(peer_->fd(), &frame[i], 1) != 1) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the slow peer itself
    }
  });
  auto got = us_->recv_view(-1);
  stop = true;
  trickler.join();
  ASSERT_FALSE(got) << "the whole frame arrived: the test's peer was not slow enough";
  EXPECT_EQ(got.error().code, ETIMEDOUT);
  EXPECT_NE(got.error().message.find("a frame of 1048 bytes slower than 16 KiB/s"),
            std::string::npos)
      << got.error().message;
}

TEST_F(ConnStallTest, APeerIdleBetweenFramesIsTheCallersTimeout) {
  ASSERT_TRUE(peer_->send(wire::MsgType::kPing, 0, {}));
  ASSERT_TRUE(peer_->flush());
  auto first = us_->recv_view(10000);
  ASSERT_TRUE(first) << first.error().message;
  auto next = us_->recv_view(50);
  ASSERT_FALSE(next);
  EXPECT_EQ(next.error().code, ETIMEDOUT);
  EXPECT_EQ(next.error().message.find("middle of a frame"), std::string::npos)
      << next.error().message;
}

// An answer the peer owes is owed within the caller's timeout, Pings or not: a peer that keeps
// pinging and never answers (a replica that never acks, say) is cut like a silent one. Here it
// pings every 20 ms for 4 s and then answers; the wait for that answer is 300 ms.
TEST_F(ConnStallTest, APeerThatOnlyPingsIsCutAtTheAnswersTimeout) {
  std::atomic<bool> stop{false};
  std::thread pinger([&] {
    for (int i = 0; i < 200 && !stop; ++i) {
      if (!peer_->send(wire::MsgType::kPing, 0, {}) || !peer_->flush()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!stop) (void)send_now(*peer_, wire::Ack{1});
  });
  auto answer = expect<wire::Ack>(*us_, 300);
  stop = true;
  pinger.join();
  ASSERT_FALSE(answer) << "the answer came after 4 s of Pings, past the 300 ms it was due in";
  EXPECT_EQ(answer.error().code, ETIMEDOUT);
  EXPECT_NE(answer.error().message.find("only Pings"), std::string::npos)
      << answer.error().message;
}

}  // namespace
}  // namespace bkp::net
