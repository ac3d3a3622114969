// SnapshotStore (replicator/snapshot_store.h): an archive is kept only whole and with every part
// matching its digest, beside its .parts file; a damaged part or a short archive leaves nothing;
// the newest `keep` stay; data out of order is a protocol error; a transfer cut by a session's
// end goes on where it stopped, in any later session, and only the same archive at the same
// offset may go on; sessions with two servers store two volumes at once, and never one volume.
#include "replicator/snapshot_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/part_digests.h"
#include "tests/testutil/files.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::replicator {
namespace {

constexpr uint32_t kPart = 1u << 20;  // the smallest part size the protocol allows

std::string bytes_of(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 7 % 251);
  return s;
}

wire::SnapshotBegin begin_of(const std::string& id, const std::string& data, uint32_t keep = 10) {
  PartHasher h(kPart);
  h.feed(data);
  return wire::SnapshotBegin{"web1", "/srv/app", id, data.size(), keep, kPart, h.finish()};
}

// Sends data[from, end) in 300 KiB pieces (not aligned with parts).
void send(SnapshotStore::Intake& intake, const std::string& data, size_t from = 0, size_t end = SIZE_MAX) {
  end = std::min(end, data.size());
  for (size_t at = from; at < end; at += 300 * 1024) {
    size_t n = std::min<size_t>(300 * 1024, end - at);
    auto sent = intake.data(wire::SnapshotData{
        at, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data() + at), n)});
    ASSERT_TRUE(sent) << sent.error().message;
  }
}

class SnapshotStoreTest : public ::testing::Test {
 protected:
  testutil::TempDir root{"bkp-snapstore"};
  SnapshotStore store{root.path()};
  SnapshotStore::Intake intake{store};  // one session's
  std::string dir() const { return root.path() + "/.snapshots/web1/srv-app"; }
};

TEST_F(SnapshotStoreTest, AWholeArchiveIsKeptWithItsDigests) {
  const std::string data = bytes_of(2 * kPart + 12345, 'a');
  auto b = begin_of("20261130T010203.000Z", data);
  intake.begin(b);
  send(intake, data);
  auto stored = intake.end();
  ASSERT_TRUE(stored) << stored.error().message;
  EXPECT_EQ(stored->code, 0u) << stored->text;
  EXPECT_EQ(testutil::read_file(dir() + "/20261130T010203.000Z.tgz"), data);
  auto parts = testutil::read_file(dir() + "/20261130T010203.000Z.parts");
  ASSERT_TRUE(parts);
  std::string expected = std::to_string(kPart) + "\n";
  for (const auto& d : b.digests) expected += to_hex(d) + "\n";
  EXPECT_EQ(*parts, expected);
  EXPECT_EQ(store.inventory("web1", "/srv/app")->ids,
            std::vector<std::string>{"20261130T010203.000Z"});
}

TEST_F(SnapshotStoreTest, ADamagedPartOrAShortArchiveLeavesNothing) {
  const std::string data = bytes_of(3 * kPart, 'b');
  std::string damaged = data;
  damaged[kPart + 17] ^= 1;  // part 1
  intake.begin(begin_of("20261130T010203.000Z", data));
  send(intake, damaged);
  auto stored = intake.end();
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->code, static_cast<uint32_t>(EBADMSG));
  EXPECT_NE(stored->text.find("part 1 "), std::string::npos) << stored->text;
  EXPECT_TRUE(store.inventory("web1", "/srv/app")->ids.empty());

  intake.begin(begin_of("20261130T010204.000Z", data));
  send(intake, data.substr(0, kPart));
  EXPECT_FALSE(intake.end()) << "an archive ended short is a protocol error";
  intake.abort();
  EXPECT_TRUE(store.inventory("web1", "/srv/app")->ids.empty());
  EXPECT_EQ(::access((dir() + "/.tmp-20261130T010204.000Z.tgz").c_str(), F_OK), -1);
}

TEST_F(SnapshotStoreTest, TheNewestKeepStay) {
  for (int i = 0; i < 4; ++i) {
    const std::string id = "20261130T01020" + std::to_string(i) + ".000Z";
    const std::string data = bytes_of(1000 + i, static_cast<char>('c' + i));
    intake.begin(begin_of(id, data, /*keep=*/2));
    send(intake, data);
    auto stored = intake.end();
    ASSERT_TRUE(stored && stored->code == 0);
  }
  EXPECT_EQ(store.inventory("web1", "/srv/app")->ids,
            (std::vector<std::string>{"20261130T010202.000Z", "20261130T010203.000Z"}));
  EXPECT_EQ(::access((dir() + "/20261130T010201.000Z.parts").c_str(), F_OK), -1);
}

TEST_F(SnapshotStoreTest, DataOutOfOrderIsAProtocolError) {
  const std::string data = bytes_of(5000, 'd');
  EXPECT_FALSE(intake.data(wire::SnapshotData{0, std::span<const uint8_t>(
                                                    reinterpret_cast<const uint8_t*>(data.data()),
                                                    10)}))
      << "data before any begin";
  intake.begin(begin_of("20261130T010203.000Z", data));
  auto gap = intake.data(wire::SnapshotData{
      100, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), 10)});
  EXPECT_FALSE(gap);
}

TEST_F(SnapshotStoreTest, ACutTransferGoesOnWhereItStoppedInTheNextSession) {
  const std::string data = bytes_of(3 * kPart + 777, 'e');
  const std::string id = "20261130T010203.000Z";
  {
    SnapshotStore::Intake first(store);
    first.begin(begin_of(id, data));
    send(first, data, 0, kPart + 300 * 1024);
  }  // the session ends here
  auto inv = store.inventory("web1", "/srv/app");
  ASSERT_TRUE(inv);
  EXPECT_TRUE(inv->ids.empty());
  EXPECT_EQ(inv->partial_id, id);
  EXPECT_EQ(inv->partial_bytes, kPart + 300 * 1024);
  EXPECT_EQ(store.inventory("web1", "/srv/other")->partial_id, "") << "another volume's";

  auto resumed = begin_of(id, data);  // from the next session, with whichever server
  resumed.offset = inv->partial_bytes;
  intake.begin(resumed);
  send(intake, data, resumed.offset);
  auto stored = intake.end();
  ASSERT_TRUE(stored) << stored.error().message;
  EXPECT_EQ(stored->code, 0u) << stored->text;
  EXPECT_EQ(testutil::read_file(dir() + "/" + id + ".tgz"), data);
}

TEST_F(SnapshotStoreTest, TwoSessionsStoreTwoVolumesAtOnceButNeverOneVolume) {
  const std::string data = bytes_of(2 * kPart + 5, 'h');
  const std::string id = "20261130T010203.000Z";
  SnapshotStore::Intake other(store);  // a session with another server
  auto elsewhere = begin_of(id, data);
  elsewhere.path = "/srv/other";
  intake.begin(begin_of(id, data));
  other.begin(elsewhere);
  send(intake, data, 0, kPart);
  send(other, data, 0, kPart);
  send(intake, data, kPart);
  send(other, data, kPart);
  auto one = intake.end(), two = other.end();
  ASSERT_TRUE(one && two);
  EXPECT_EQ(one->code, 0u) << one->text;
  EXPECT_EQ(two->code, 0u) << two->text;
  EXPECT_EQ(store.inventory("web1", "/srv/other")->ids, std::vector<std::string>{id});

  const std::string later = "20261130T010204.000Z";
  intake.begin(begin_of(later, data));
  send(intake, data, 0, kPart);
  other.begin(begin_of(later, data));  // the same volume while the first session receives it
  send(other, data);
  auto refused = other.end();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->code, static_cast<uint32_t>(EBUSY)) << refused->text;
  send(intake, data, kPart);
  auto stored = intake.end();
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->code, 0u) << stored->text << ": the refused one must not touch its files";
  EXPECT_EQ(testutil::read_file(dir() + "/" + later + ".tgz"), data);
}

TEST_F(SnapshotStoreTest, AKeptTransferWhoseDirectoryWentIsForgotten) {
  const std::string data = bytes_of(2 * kPart, 'g');
  {
    SnapshotStore::Intake cut(store);
    cut.begin(begin_of("20261130T010203.000Z", data));
    send(cut, data, 0, kPart);
  }
  std::filesystem::remove_all(root.path() + "/.snapshots");  // a purge of the volume
  auto inv = store.inventory("web1", "/srv/app");
  ASSERT_TRUE(inv);
  EXPECT_EQ(inv->partial_id, "");
  EXPECT_EQ(inv->partial_bytes, 0u);
}

TEST_F(SnapshotStoreTest, OnlyTheSameArchiveAtTheSameOffsetGoesOn) {
  const std::string data = bytes_of(2 * kPart, 'f');
  const std::string id = "20261130T010203.000Z";
  {
    SnapshotStore::Intake cut(store);
    cut.begin(begin_of(id, data));
    send(cut, data, 0, kPart);
  }
  auto wrong = begin_of(id, data);
  wrong.offset = kPart / 2;  // not where it stopped
  intake.begin(wrong);
  send(intake, data, wrong.offset);
  auto stored = intake.end();
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->code, static_cast<uint32_t>(ESTALE)) << stored->text;
  EXPECT_TRUE(store.inventory("web1", "/srv/app")->ids.empty());
  EXPECT_EQ(store.inventory("web1", "/srv/app")->partial_id, "") << "nothing kept to go on with";
  EXPECT_EQ(::access((dir() + "/.tmp-" + id + ".tgz").c_str(), F_OK), -1);
}

}  // namespace
}  // namespace bkp::replicator
