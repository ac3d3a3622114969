// Cut (server/cut.h): an archive written from a cut is the tree at the cut, whatever the
// applier does to the tree after it — overwrites, truncates, punches, a create that empties a
// file, unlinks, renames over files and of directories, rmdir, mkdir, hard links made and
// removed, an id given to another file, chmod, times and xattrs — including changes that race
// the archiver inside the file it is reading. And it keeps only what changes: nothing for an
// append, about one block for a one-block write, nothing left once the archive is written. A
// cut that cannot keep something fails the archive, never the apply. A snapshot seeds an empty
// mirror into the tree at its cut, with the ids and source ctimes of that cut, and a seeded
// volume's replica streams start over from the seeded mirror.
#include "server/cut.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "common/changes/applier.h"
#include "server/file_ids.h"
#include "server/hub.h"
#include "server/seed.h"
#include "server/snapshot.h"
#include "tests/testutil/daemon.h"
#include "tests/testutil/files.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/tree_compare.h"
#include "tests/testutil/write_of.h"
#include "tools/extract.h"

namespace bkp::server {
namespace {

using wire::Op;
using wire::OpKind;

constexpr uint64_t kMiB = 1 << 20;

std::string bytes(size_t n, uint64_t seed) {
  auto b = testutil::random_bytes(n, seed);
  return std::string(b.begin(), b.end());
}

// A tgz file read in 64 KiB chunks, as a restore stream.
class FileSource : public tools::ByteSource {
 public:
  explicit FileSource(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  Result<std::span<const uint8_t>> next() override {
    ssize_t n = ::read(fd_.get(), buf_, sizeof buf_);
    if (n < 0) return fail_errno("read archive");
    return std::span<const uint8_t>(buf_, static_cast<size_t>(n));
  }

 private:
  UniqueFd fd_;
  uint8_t buf_[1 << 16];
};

class CutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto a = changes::Applier::open(dir_.sub("vol"), "mirror", "ids");
    ASSERT_TRUE(a) << a.error().message;
    applier_ = std::move(*a);
  }
  void TearDown() override {
    if (applier_) applier_->set_observer(nullptr);
  }

  std::string mirror() const { return dir_.sub("vol/mirror"); }
  std::string scratch() const { return dir_.sub("vol/cut"); }

  void apply(Op op) {
    auto r = applier_->apply(op);
    ASSERT_TRUE(r) << r.error().message;
  }
  void write(uint64_t id, uint64_t offset, const std::string& data) {
    auto r = applier_->write(testutil::write_of(id, offset, data));
    ASSERT_TRUE(r) << r.error().message;
  }
  void create(const std::string& path, uint64_t id, const std::string& data = "") {
    apply(Op{.kind = OpKind::kCreate, .path = path, .id = id, .mode = 0644});
    if (!data.empty()) write(id, 0, data);
  }
  void mkdir(const std::string& path) {
    apply(Op{.kind = OpKind::kMkdir, .path = path, .mode = 0755});
  }
  void unlink(const std::string& path) { apply(Op{.kind = OpKind::kUnlink, .path = path}); }
  void rename(const std::string& from, const std::string& to) {
    apply(Op{.kind = OpKind::kRename, .path = from, .target = to});
  }
  void truncate(uint64_t id, uint64_t size) {
    apply(Op{.kind = OpKind::kTruncate, .id = id, .size = size});
  }
  void punch(uint64_t id, uint64_t offset, uint64_t length) {
    apply(Op{.kind = OpKind::kPunch, .id = id, .size = length, .offset = offset});
  }
  void set_xattr(const std::string& path, const std::string& name, const std::string& value) {
    apply(Op{.kind = OpKind::kSetXattr, .path = path, .name = name, .value = value});
  }

  // Takes the cut and makes it the applier's observer, as a run does.
  std::unique_ptr<Cut> take() {
    auto cut = Cut::take(applier_->tree_fd(), applier_->ids_fd(), label_entries(*applier_),
                         scratch());
    EXPECT_TRUE(cut) << cut.error().message;
    if (!cut) return nullptr;
    applier_->set_observer(cut->get());
    return std::move(*cut);
  }

  // A copy of the mirror now (cp -a keeps modes, owners, times, xattrs, hard links and holes).
  std::string copy_mirror(const std::string& name) {
    std::string to = dir_.sub(name);
    auto r = testutil::run_command({"/bin/cp", "-a", mirror(), to});
    EXPECT_EQ(r.exit_code(), 0) << r.output;
    return to;
  }

  Result<SnapshotFile> archive(Cut& cut, const std::string& id) {
    LocalArchiveStore store(dir_.sub("snaps"));
    return write_snapshot(cut, store, id, ArchiveOptions{});
  }

  // The archive's tree, extracted as a restore does.
  std::string extract(const SnapshotFile& snap) {
    std::string out = dir_.mkdir("out-" + snap.id);
    FileSource source(dir_.sub("snaps/" + snap.name));
    auto r = tools::extract_archive(source, out);
    EXPECT_TRUE(r) << r.error().message;
    return out;
  }

  // Files in the scratch area.
  std::vector<std::string> kept() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(scratch())) {
      out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  testutil::TempDir dir_{"bkp-cut"};
  std::unique_ptr<changes::Applier> applier_;
};

TEST_F(CutTest, AnArchiveIsTheTreeAtTheCutWhateverChangesAfterIt) {
  mkdir("a");
  for (int i = 0; i < 5; ++i) {
    create("a/f" + std::to_string(i), 10 + i, "early " + std::to_string(i));
  }
  mkdir("z");
  create("z/over", 1, bytes(3 * kMiB, 1));
  create("z/trunc", 2, bytes(2 * kMiB, 2));
  create("z/punch", 3, bytes(kMiB, 3));
  create("z/sparse", 4);
  write(4, 8 * kMiB, "island");
  create("z/gone", 5, "removed after the cut");
  create("z/victim", 6, "renamed over after the cut");
  create("z/two", 7, "two names, one goes");
  apply(Op{.kind = OpKind::kLink, .path = "z/two-b", .target = "z/two", .id = 7});
  create("z/emptied", 8, "a create that empties me (a replayed create)");
  create("z/reused", 9, "my id goes to another file");
  mkdir("z/rmdir");
  mkdir("z/moved");
  create("z/moved/inner", 20, "inside a directory renamed after the cut");
  apply(Op{.kind = OpKind::kSymlink, .path = "z/link", .target = "over"});
  set_xattr("z/over", "user.note", "before");
  create("z/new", 21, "renames over z/victim");
  ASSERT_TRUE(applier_->commit());

  auto cut = take();
  ASSERT_TRUE(cut);
  std::string at_cut = copy_mirror("at-cut");
  EXPECT_EQ(cut->files(), 16u);

  write(1, kMiB / 2, bytes(kMiB, 100));
  write(1, 3 * kMiB, "appended");
  truncate(2, 1000);
  punch(3, 4096, 64 * 1024);
  write(4, 0, "head");
  unlink("z/gone");
  rename("z/new", "z/victim");
  unlink("z/two");
  apply(Op{.kind = OpKind::kLink, .path = "z/three", .target = "a/f0", .id = 10});
  create("z/emptied", 8);  // same path, same id: truncated to empty
  create("z/other", 9, "took the id");
  apply(Op{.kind = OpKind::kRmdir, .path = "z/rmdir"});
  mkdir("z/born");
  rename("z/moved", "a/moved");
  write(20, 0, "rewritten");
  set_xattr("z/over", "user.note", "after");
  apply(Op{.kind = OpKind::kRemoveXattr, .path = "z/over", .name = "user.note"});
  apply(Op{.kind = OpKind::kAttr, .path = "a/f1", .mode = 0600, .mtime_ns = 42});
  apply(Op{.kind = OpKind::kSymlink, .path = "z/link", .target = "elsewhere"});
  ASSERT_TRUE(applier_->commit());
  EXPECT_FALSE(cut->failure());
  EXPECT_NE(testutil::compare_trees(at_cut, mirror()), "") << "the changes changed nothing";

  auto snap = archive(*cut, "20261130T000000.000Z");
  ASSERT_TRUE(snap) << snap.error().message;
  EXPECT_EQ(testutil::compare_trees(at_cut, extract(*snap)), "");
  EXPECT_EQ(kept(), std::vector<std::string>{"names"}) << "kept copies outlived their archiving";
  applier_->set_observer(nullptr);
  cut.reset();
  EXPECT_TRUE(kept().empty());
}

// A snapshot seeds an empty mirror (server/seed.h) into the tree at its cut, with every regular
// file under its id and the source ctime known at the cut, whatever the mirror did after the
// cut; a file the file ids do not name is left to the node's reconcile.
TEST_F(CutTest, ASnapshotSeedsAnEmptyMirrorWithTheIdsAndSourceCtimesOfItsCut) {
  mkdir("d");
  apply(Op{.kind = OpKind::kAttr, .path = "d", .mode = 0710, .uid = 7, .gid = 8, .mtime_ns = 5});
  create("d/known", 1, bytes(300 * 1024, 1));
  apply(Op{.kind = OpKind::kAttr, .id = 1, .mode = 0640, .uid = 3, .gid = 4,
           .mtime_ns = 1'700'000'000'123'456'789, .ctime_ns = 111});
  create("d/unknown", 2, "no source ctime");
  create("sparse", 3);
  write(3, 8 * kMiB, "island");
  apply(Op{.kind = OpKind::kAttr, .id = 3, .mode = 0600, .ctime_ns = 333});
  apply(Op{.kind = OpKind::kLink, .path = "d/known-too", .target = "d/known", .id = 1});
  apply(Op{.kind = OpKind::kSymlink, .path = "d/link", .target = "known", .uid = 5, .gid = 6,
           .mtime_ns = 77});
  apply(Op{.kind = OpKind::kMknod, .path = "fifo", .mode = S_IFIFO | 0620});
  set_xattr("d/known", "user.note", "kept");
  set_xattr("d", "user.dir", "too");
  apply(Op{.kind = OpKind::kAttr, .id = 1, .mode = 0640, .uid = 3, .gid = 4,
           .mtime_ns = 1'700'000'000'123'456'789, .ctime_ns = 111});  // the closing Attr
  ASSERT_TRUE(applier_->commit());
  ASSERT_EQ(applier_->source_ctime(1), 111);

  auto cut = take();
  ASSERT_TRUE(cut);
  std::string at_cut = copy_mirror("at-cut");
  write(1, 0, "after the cut");  // the mirror forgets id 1's ctime; the cut does not
  apply(Op{.kind = OpKind::kAttr, .id = 3, .mode = 0600, .ctime_ns = 999});
  unlink("d/unknown");
  ASSERT_TRUE(applier_->commit());
  auto snap = archive(*cut, "20261130T000000.000Z");
  ASSERT_TRUE(snap) << snap.error().message;
  applier_->set_observer(nullptr);
  cut.reset();

  LocalArchiveStore store(dir_.sub("snaps"));
  auto loaded = load_file_ids(store, snap->id);
  ASSERT_TRUE(loaded) << loaded.error().message;
  ASSERT_TRUE(*loaded);
  auto ids = std::move(**loaded);
  EXPECT_EQ(ids.size(), 4u) << "every name of every regular file";
  EXPECT_EQ(ids["d/known-too"].id, 1u);
  EXPECT_EQ(ids["d/known"].source_ctime, 111);
  EXPECT_EQ(ids["sparse"].source_ctime, 333) << "as at the cut";
  EXPECT_EQ(ids["d/unknown"].source_ctime, 0);

  auto seeded = changes::Applier::open(dir_.sub("seeded"), "mirror", "ids");
  ASSERT_TRUE(seeded) << seeded.error().message;
  auto archive_bytes = store.open(snap->id, ArchivePart::kArchive);
  ASSERT_TRUE(archive_bytes) << archive_bytes.error().message;
  auto done = seed_mirror(**seeded, **archive_bytes, ids);
  ASSERT_TRUE(done) << done.error().message;
  EXPECT_EQ(done->files, 3u);
  EXPECT_EQ(done->skipped, 0u);
  EXPECT_LT(done->bytes, kMiB) << "the sparse file's hole was written";
  EXPECT_EQ(testutil::compare_trees(at_cut, dir_.sub("seeded/mirror")), "");
  EXPECT_EQ((*seeded)->source_ctime(1), 111);
  EXPECT_EQ((*seeded)->source_ctime(2), 0);
  EXPECT_EQ((*seeded)->source_ctime(3), 333);
  struct stat st{};
  ASSERT_EQ(::lstat(dir_.sub("seeded/mirror/d/known-too").c_str(), &st), 0);
  EXPECT_EQ((*seeded)->id_of_inode(st.st_ino), 1u);

  // Without an id a file is not seeded: the reconcile sends it.
  ids.erase("sparse");
  auto partly = changes::Applier::open(dir_.sub("partly"), "mirror", "ids");
  ASSERT_TRUE(partly) << partly.error().message;
  archive_bytes = store.open(snap->id, ArchivePart::kArchive);
  ASSERT_TRUE(archive_bytes) << archive_bytes.error().message;
  done = seed_mirror(**partly, **archive_bytes, ids);
  ASSERT_TRUE(done) << done.error().message;
  EXPECT_EQ(done->skipped, 1u);
  EXPECT_NE(::access(dir_.sub("partly/mirror/sparse").c_str(), F_OK), 0);
}

// Seeding a volume of backupd's Hub: the replica stream that began on the empty mirror is given
// a scan of the seeded one, and the mirror no longer reads as syncing.
TEST_F(CutTest, ASeededVolumeGivesItsReplicaStreamsAScanOfWhatItHolds) {
  mkdir("d");
  create("d/one", 1, bytes(100000, 7));
  create("d/two", 2, "two");
  ASSERT_TRUE(applier_->commit());
  auto cut = take();
  ASSERT_TRUE(cut);
  std::string at_cut = copy_mirror("at-cut");

  Hub hub(dir_.sub("hub"));
  auto volume = hub.volume("web1", "/srv/app");
  ASSERT_TRUE(volume) << volume.error().message;
  hub.set_placement("web1:/srv/app", {"r1"});
  auto replica = hub.attach_replica("r1");
  ASSERT_TRUE(replica) << replica.error().message;
  ASSERT_EQ((*replica)->streams().size(), 1u);
  ReplicaStream& stream = *(*replica)->streams().front();
  EXPECT_EQ(stream.log.stats().files, 0u) << "the empty mirror's scan";

  auto snap = write_snapshot(*cut, *hub.archives("web1", "/srv/app"), "20261130T000000.000Z",
                             ArchiveOptions{});
  ASSERT_TRUE(snap) << snap.error().message;
  applier_->set_observer(nullptr);
  cut.reset();
  SnapshotRecord record;
  record.id = snap->id;
  auto seeded = seed_volume(**volume, hub, record, nullptr);
  ASSERT_TRUE(seeded) << seeded.error().message;
  ASSERT_TRUE(*seeded);
  EXPECT_EQ((*seeded)->files, 2u);
  EXPECT_FALSE(hub.mirror_syncing(stream));
  EXPECT_EQ(stream.log.stats().files, 2u) << "the stream still holds the empty mirror's scan";
  EXPECT_EQ(testutil::compare_trees(at_cut, hub.volume_dir("web1", "/srv/app") + "/mirror"), "");
  hub.detach_replica(**replica);
}

// The archiver reads a large file block by block while the applier rewrites it, front to back
// and back to front, and punches and truncates it: every block is the cut's.
TEST_F(CutTest, ChangesRacingTheArchiverInsideAFileStillGiveTheCut) {
  constexpr uint64_t kSize = 16 * kMiB;
  create("big", 1, bytes(kSize, 7));
  create("small", 2, "small");
  ASSERT_TRUE(applier_->commit());
  auto cut = take();
  ASSERT_TRUE(cut);
  std::string at_cut = copy_mirror("at-cut");

  std::atomic<bool> done{false};
  Result<SnapshotFile> snap = fail(EINVAL, "not run");
  std::thread archiver([&] {
    snap = archive(*cut, "20261130T000000.000Z");
    done = true;
  });
  // The applier side: the volume mutex would serialise these with nothing but each other.
  for (int round = 0; round < 200 && !done; ++round) {
    uint64_t block = (round * 7919) % (kSize / (64 * 1024));
    write(1, block * 64 * 1024, bytes(64 * 1024, 1000 + round));
    if (round % 50 == 25) punch(1, (kSize / 2) + round * 4096, 8192);
  }
  truncate(1, kMiB);
  write(2, 0, "SMALL");
  archiver.join();
  ASSERT_TRUE(snap) << snap.error().message;
  EXPECT_EQ(testutil::compare_trees(at_cut, extract(*snap)), "");
}

// An append keeps nothing (it is past the cut's size); a 4 KiB write keeps about one block;
// a removed file is kept by a hard link, not a copy.
TEST_F(CutTest, OnlyWhatChangesIsKept) {
  create("log", 1, bytes(8 * kMiB, 1));
  create("db", 2, bytes(8 * kMiB, 2));
  create("tmp", 3, bytes(8 * kMiB, 3));
  ASSERT_TRUE(applier_->commit());
  auto cut = take();
  ASSERT_TRUE(cut);
  struct stat tmp{}, db{};
  ASSERT_EQ(::stat((mirror() + "/tmp").c_str(), &tmp), 0);
  ASSERT_EQ(::stat((mirror() + "/db").c_str(), &db), 0);

  write(1, 8 * kMiB, bytes(kMiB, 4));  // append
  write(2, 3 * kMiB, bytes(4096, 5));  // one block
  unlink("tmp");
  EXPECT_FALSE(cut->failure());

  std::string db_old = "old-" + std::to_string(db.st_ino);
  EXPECT_EQ(kept(),
            (std::vector<std::string>{"gone-" + std::to_string(tmp.st_ino), "names", db_old}));
  struct stat old{};
  ASSERT_EQ(::stat((scratch() + "/" + db_old).c_str(), &old), 0);
  EXPECT_LE(old.st_blocks * 512, 16 * 1024) << "a 4 KiB write kept more than a block or two";
}

// The scratch area cannot take the old bytes (here: it was removed): the write is applied all
// the same, and the archive fails with the reason instead of holding something not in the cut.
TEST_F(CutTest, ACutThatCannotKeepFailsTheArchiveNotTheApply) {
  create("f", 1, bytes(kMiB, 1));
  ASSERT_TRUE(applier_->commit());
  auto cut = take();
  ASSERT_TRUE(cut);
  ASSERT_EQ(::unlink((scratch() + "/names").c_str()), 0);
  ASSERT_EQ(::rmdir(scratch().c_str()), 0);

  write(1, 0, "changed");  // must succeed
  EXPECT_EQ(testutil::read_file(mirror() + "/f").value_or("").substr(0, 7), "changed");
  auto failure = cut->failure();
  ASSERT_TRUE(failure);
  EXPECT_NE(failure->message.find("cannot keep the old bytes"), std::string::npos)
      << failure->message;
  auto snap = archive(*cut, "20261130T000000.000Z");
  ASSERT_FALSE(snap);
  EXPECT_NE(snap.error().message.find("cannot keep"), std::string::npos) << snap.error().message;
}

}  // namespace
}  // namespace bkp::server
