// write_snapshot (server/snapshot.h) and what no tar format can hold: a unix socket anywhere in
// a volume used to fail every scheduled run ("pax format cannot archive sockets") after
// archiving almost everything. Sockets are now skipped and named in the snapshot's warnings;
// fifos and everything else are archived. Holes stay holes, and a disk that fills up under the
// archive fails it cleanly, with nothing left behind.
#include "server/snapshot.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "common/unique_fd.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::server {
namespace {

// A bound unix socket at path (the socket file stays after the descriptor closes).
void make_socket(const std::string& path) {
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(s);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof(addr.sun_path)) << path;
  path.copy(addr.sun_path, path.size());
  ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << path;
}

// Archives the still tree at root into dir/snaps through a cut (no applier: files by path).
Result<SnapshotFile> archive_tree(int root, const testutil::TempDir& dir, const std::string& id) {
  auto cut = Cut::take(root, -1, [](CutEntry&) {}, dir.sub("cut"));
  if (!cut) return tl::unexpected(cut.error());
  LocalArchiveStore store(dir.sub("snaps"));
  return write_snapshot(**cut, store, id, ArchiveOptions{});
}

// Entry names of a .tgz, with their file types.
std::set<std::string> entries(const std::string& tgz) {
  std::set<std::string> out;
  archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_all(a);
  EXPECT_EQ(archive_read_open_filename(a, tgz.c_str(), 1 << 16), ARCHIVE_OK) << tgz;
  archive_entry* e = nullptr;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    std::string kind = S_ISFIFO(archive_entry_filetype(e)) ? "fifo"
                       : S_ISDIR(archive_entry_filetype(e)) ? "dir"
                                                           : "file";
    out.insert(std::string(archive_entry_pathname(e)) + " " + kind);
  }
  EXPECT_EQ(archive_read_free(a), ARCHIVE_OK);
  return out;
}

TEST(SnapshotFileTest, SocketsAreSkippedAndNamedEverythingElseIsArchived) {
  testutil::TempDir dir("bkp-snap");
  std::string tree = dir.mkdir("t");
  ASSERT_EQ(::mkdir((tree + "/d").c_str(), 0755), 0);
  {
    UniqueFd f(::open((tree + "/a").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    ASSERT_TRUE(f);
    ASSERT_EQ(::write(f.get(), "data", 4), 4);
  }
  ASSERT_EQ(::mkfifo((tree + "/p").c_str(), 0640), 0);
  make_socket(tree + "/s");
  make_socket(tree + "/d/s2");
  UniqueFd root(::open(tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(root);

  auto snap = archive_tree(root.get(), dir, "20261130T000000.000Z");
  ASSERT_TRUE(snap) << snap.error().message;
  EXPECT_EQ(snap->files, 1u);
  EXPECT_NE(snap->warnings.find("2 sockets not archived"), std::string::npos) << snap->warnings;
  EXPECT_NE(snap->warnings.find("d/s2"), std::string::npos) << snap->warnings;
  EXPECT_EQ(entries(dir.sub("snaps") + "/" + snap->name),
            (std::set<std::string>{"./ dir", "a file", "d/ dir", "p fifo"}));

  // Nothing to warn about: no warnings.
  ASSERT_EQ(::unlink((tree + "/s").c_str()), 0);
  ASSERT_EQ(::unlink((tree + "/d/s2").c_str()), 0);
  auto clean = archive_tree(root.get(), dir, "20261130T000001.000Z");
  ASSERT_TRUE(clean) << clean.error().message;
  EXPECT_EQ(clean->warnings, "");
}

// A 1 GiB file with two written islands (and a second name) is stored as its islands: the
// archive stays small, and reading it back gives the islands at their offsets and holes between.
TEST(SnapshotFileTest, HolesStayHoles) {
  testutil::TempDir dir("bkp-snap");
  std::string tree = dir.mkdir("t");
  {
    UniqueFd f(::open((tree + "/big").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    ASSERT_TRUE(f);
    ASSERT_EQ(::pwrite(f.get(), "head", 4, 0), 4);
    ASSERT_EQ(::pwrite(f.get(), "island", 6, 512 << 20), 6);
    ASSERT_EQ(::ftruncate(f.get(), 1 << 30), 0);
  }
  ASSERT_EQ(::link((tree + "/big").c_str(), (tree + "/big2").c_str()), 0);
  UniqueFd root(::open(tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(root);
  auto snap = archive_tree(root.get(), dir, "20261130T000000.000Z");
  ASSERT_TRUE(snap) << snap.error().message;
  EXPECT_LT(snap->bytes, 1u << 20) << "the holes were stored as zeros";

  archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_all(a);
  ASSERT_EQ(archive_read_open_filename(a, (dir.sub("snaps") + "/" + snap->name).c_str(), 1 << 16),
            ARCHIVE_OK);
  archive_entry* e = nullptr;
  std::string blocks;
  int with_data = 0;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    if (archive_entry_filetype(e) != AE_IFREG || archive_entry_size(e) == 0) continue;
    ++with_data;
    EXPECT_EQ(archive_entry_size(e), 1 << 30);
    const void* buf = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    while (archive_read_data_block(a, &buf, &size, &offset) == ARCHIVE_OK) {
      std::string bytes(static_cast<const char*>(buf), size);
      if (bytes.find_first_not_of('\0') == std::string::npos) continue;
      blocks += std::to_string(offset) + ":" + bytes.substr(0, bytes.find('\0')) + " ";
    }
  }
  archive_read_free(a);
  EXPECT_EQ(with_data, 1) << "the second name must be a hard link";
  EXPECT_EQ(blocks, "0:head " + std::to_string(512 << 20) + ":island ");
}

// The snapshots directory on a 1 MiB tmpfs, the tree 4 MiB of random bytes: the compressed
// stream cannot fit. The snapshot fails with ENOSPC naming the file it could not write, and no
// file is left, under a final name or a temporary one.
TEST(SnapshotFileTest, AFullDiskFailsTheSnapshotAndLeavesNothing) {
  testutil::TempDir dir("bkp-snap");
  std::string tree = dir.mkdir("t");
  {
    UniqueFd f(::open((tree + "/random").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    ASSERT_TRUE(f);
    std::mt19937_64 rng(7);
    std::vector<uint64_t> words((4 << 20) / sizeof(uint64_t));
    for (auto& w : words) w = rng();
    size_t bytes = words.size() * sizeof(uint64_t);
    ASSERT_EQ(::write(f.get(), words.data(), bytes), static_cast<ssize_t>(bytes));
  }
  std::string snaps = dir.mkdir("snaps");
  if (::mount("tmpfs", snaps.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=1m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs at " << snaps << ": " << std::strerror(errno);
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{snaps};
  UniqueFd root(::open(tree.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(root);

  auto snap = archive_tree(root.get(), dir, "20261130T000000.000Z");
  ASSERT_FALSE(snap) << "a 4 MiB random file fitted in a 1 MiB tmpfs compressed";
  EXPECT_EQ(snap.error().code, ENOSPC) << snap.error().message;
  EXPECT_NE(snap.error().message.find("No space left on device"), std::string::npos)
      << snap.error().message;
  EXPECT_NE(snap.error().message.find("write " + snaps + "/.tmp-20261130T000000.000Z.tgz"),
            std::string::npos)
      << snap.error().message;
  EXPECT_TRUE(std::filesystem::is_empty(snaps)) << "a partial archive was left behind";
}

// Archive ids read back as the instants they name (adopting archives found in a store), and
// nothing else reads as one.
TEST(SnapshotFileTest, IdsReadBackAsTheirInstant) {
  for (int64_t ms : {int64_t{0}, int64_t{1764552667047}, int64_t{4102444799999}}) {
    EXPECT_EQ(snapshot_id_ms(snapshot_id_for(ms)), ms) << snapshot_id_for(ms);
  }
  for (const char* bad : {"", "20261201T031127.047", "20261201T031127.047Zx", "2026120xT031127.047Z",
                          "20261301T031127.047Z", "20261201T031127,047Z", "20261201 031127.047Z"}) {
    EXPECT_FALSE(snapshot_id_ms(bad)) << bad;
  }
}

}  // namespace
}  // namespace bkp::server
