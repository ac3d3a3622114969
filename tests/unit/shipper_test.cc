// send_batch's prefetch window (common/changes/shipper.cc): before it opens a file, the data of
// the scanned files after it has been asked for, at most 64 files and 8 MiB ahead, each file
// once, never past its extents, and never for a live change; large scanned files are read past
// the page cache instead. The source here records what it was
// asked and when; the batch really goes over a socketpair, so the order is send_batch's own.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/changes/change_log.h"
#include "common/changes/direct_reader.h"
#include "common/changes/shipper.h"
#include "common/net/conn.h"
#include "tests/testutil/files.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::changes {
namespace {

constexpr int kTimeoutMs = 10000;

struct Event {
  bool open = false;  // else a prefetch
  uint64_t id = 0;
  uint64_t offset = 0, length = 0;
};

class RecordingSource : public DataSource {
 public:
  explicit RecordingSource(std::string dir) : dir_(std::move(dir)) {}
  Result<UniqueFd> open_file(const FileRef& f) override {
    events.push_back(Event{true, f.id, 0, 0});
    UniqueFd fd(::open((dir_ + "/" + std::to_string(f.id)).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return fail_errno("open");
    return fd;
  }
  void prefetch(const FileRef& f, uint64_t offset, uint64_t length) override {
    events.push_back(Event{false, f.id, offset, length});
  }
  std::vector<Event> events;

 private:
  std::string dir_;
};

// Sends the batch over a socketpair with send_batch while a receiver hands each frame before
// the Commit to on_frame.
Result<void> ship(const Batch& batch, DataSource& source, ShipCounters& counters,
                  const std::function<void(const wire::Frame&)>& on_frame) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return fail_errno("socketpair");
  auto a = net::Conn::open(UniqueFd(sv[0]));
  auto b = net::Conn::open(UniqueFd(sv[1]));
  if (!a || !b) return fail(EIO, "connection");
  std::thread rx([&] {
    while (true) {
      auto frame = (*b)->recv(kTimeoutMs);
      if (!frame || frame->type == wire::MsgType::kCommit) return;
      on_frame(*frame);
    }
  });
  ChangeLog log;
  auto sent = send_batch(**a, batch, 0, source, log, counters);
  rx.join();
  return sent;
}

TEST(ShipperPrefetchTest, ScannedFilesAheadAreAskedForWithinTheWindowAndLiveOnesNever) {
  testutil::TempDir dir("bkp-prefetch");
  // 150 small scanned files, a live one among them, then three of 3 MiB: the byte bound, not
  // the file count, stops the window there.
  Batch batch;
  batch.number = 1;
  std::map<uint64_t, std::pair<uint64_t, bool>> files;  // id -> (size, from_scan)
  for (uint64_t id = 1; id <= 153; ++id) {
    uint64_t size = id <= 150 ? 4096 : 3u << 20;
    bool scanned = id != 70;
    files[id] = {size, scanned};
    UniqueFd fd(::open(dir.sub(std::to_string(id)).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd);
    ASSERT_EQ(ftruncate(fd.get(), static_cast<off_t>(size)), 0);
    FileChange f;
    f.ref.id = id;
    f.extents.add(0, size);
    f.from_scan = scanned;
    batch.files.push_back(std::move(f));
  }

  RecordingSource source(dir.path());
  ShipCounters counters;
  auto sent = ship(batch, source, counters, [](const wire::Frame&) {});
  ASSERT_TRUE(sent) << sent.error().message;

  std::map<uint64_t, uint64_t> asked;  // id -> bytes asked for
  std::vector<uint64_t> opened;
  for (const Event& e : source.events) {
    if (!e.open) {
      EXPECT_TRUE(files[e.id].second) << "file " << e.id << " is a live change";
      EXPECT_LE(e.offset + e.length, files[e.id].first) << "file " << e.id;
      EXPECT_EQ(asked.count(e.id), 0u) << "file " << e.id << " asked for twice";
      EXPECT_FALSE(std::find(opened.begin(), opened.end(), e.id) != opened.end())
          << "file " << e.id << " asked for after it was opened";
      asked[e.id] += e.length;
      continue;
    }
    opened.push_back(e.id);
    uint64_t ahead_bytes = 0, ahead_files = 0;
    for (const auto& [id, bytes] : asked) {
      if (id > e.id) {
        ahead_bytes += bytes;
        ++ahead_files;
      }
    }
    EXPECT_LE(ahead_bytes, 8u << 20) << "when file " << e.id << " is opened";
    EXPECT_LE(ahead_files, 64u) << "when file " << e.id << " is opened";
    // What the window must hold: the next scanned files, up to 64 ahead, while under 8 MiB.
    uint64_t want = 0;
    for (uint64_t id = e.id + 1; id <= std::min<uint64_t>(e.id + 63, 153); ++id) {
      if (want >= (8u << 20)) break;
      if (!files[id].second) continue;
      EXPECT_TRUE(asked.count(id)) << "file " << id << " not asked for when " << e.id << " opens";
      want += files[id].first;
    }
  }
  ASSERT_EQ(opened.size(), 153u);
  EXPECT_EQ(asked.count(1), 0u) << "the first file is read as it is sent";
  for (uint64_t id = 2; id <= 150; ++id) {
    if (id != 70) {
      EXPECT_EQ(asked[id], 4096u) << "file " << id;
    }
  }
  EXPECT_EQ(asked.count(70), 0u);
  EXPECT_GT(asked[151], 0u);
}

// A large scanned file is read past the page cache (direct_reader.h) and not prefetched into
// it: the receiver still gets every byte, the middle parts of a file split across takes too.
TEST(ShipperDirectTest, LargeScannedFilesArriveWholeAndStayOutOfTheCache) {
  testutil::TempDir dir("bkp-direct-ship");
  constexpr uint64_t kSize = (9u << 20) + 12345;
  auto data = testutil::random_bytes(kSize, 7);
  for (uint64_t id : {1, 2}) {
    std::string path = dir.sub(std::to_string(id));
    testutil::write_file(path, {reinterpret_cast<const char*>(data.data()), data.size()});
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    ASSERT_EQ(fdatasync(fd.get()), 0);
    ASSERT_EQ(posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
  }
  {
    UniqueFd fd(::open(dir.sub("1").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    if (DirectReader probe(kChunk); !probe.use(fd.get(), true)) {
      GTEST_SKIP() << "this filesystem cannot read directly";
    }
  }
  Batch batch;
  batch.number = 1;
  FileChange part;  // a middle part of file 1, as a bounded take cuts it
  part.ref.id = 1;
  part.extents.add(3u << 20, 5u << 20);
  part.from_scan = true;
  batch.files.push_back(std::move(part));
  FileChange whole;
  whole.ref.id = 2;
  whole.extents.add(0, kSize);
  whole.from_scan = true;
  batch.files.push_back(std::move(whole));

  std::map<uint64_t, std::vector<uint8_t>> got;  // id -> bytes at their offsets
  size_t bad_writes = 0;
  RecordingSource source(dir.path());
  ShipCounters counters;
  auto sent = ship(batch, source, counters, [&](const wire::Frame& frame) {
    if (frame.type != wire::MsgType::kWrite) return;
    auto w = wire::decode_write(frame.flags, frame.payload);
    if (!w) {
      ++bad_writes;
      return;
    }
    auto& bytes = got[w->id];
    if (bytes.size() < w->offset + w->data.size()) bytes.resize(w->offset + w->data.size());
    std::copy(w->data.begin(), w->data.end(), bytes.begin() + static_cast<ptrdiff_t>(w->offset));
  });
  ASSERT_TRUE(sent) << sent.error().message;
  EXPECT_EQ(bad_writes, 0u);

  for (const Event& e : source.events) EXPECT_TRUE(e.open) << "file " << e.id << " prefetched";
  EXPECT_EQ(counters.data_bytes, (5u << 20) + kSize);
  ASSERT_EQ(got[1].size(), 8u << 20);
  EXPECT_TRUE(std::equal(got[1].begin() + (3 << 20), got[1].end(), data.begin() + (3 << 20)));
  EXPECT_EQ(got[2], data);
  for (uint64_t id : {1, 2}) {
    UniqueFd fd(::open(dir.sub(std::to_string(id)).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    EXPECT_EQ(testutil::cached_pages(fd.get(), kSize), 0u) << "file " << id;
  }
}

}  // namespace
}  // namespace bkp::changes
