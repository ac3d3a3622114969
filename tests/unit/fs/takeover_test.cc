// What a successor worker finds in the takeover memfds (takeover.h): every node id the kernel
// holds names the same file with the same path, lookup counts carry over, a torn record is
// refused rather than trusted, open files are reopened with their flags on first use, and the
// INIT exchange and the worker generation survive.
#include "fs/takeover.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "fs/file_handle.h"
#include "fs/inode_table.h"
#include "fs/keeper.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::fs {
namespace {

UniqueFd memfd() { return UniqueFd(::memfd_create("takeover-test", MFD_CLOEXEC)); }
UniqueFd dup_of(const UniqueFd& fd) { return UniqueFd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0)); }

class TakeoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::mkdir(dir_.sub("d").c_str(), 0755), 0);
    for (const char* f : {"d/a", "d/b", "top"}) {
      UniqueFd fd(::open(dir_.sub(f).c_str(), O_CREAT | O_WRONLY, 0644));
      ASSERT_TRUE(fd);
      ASSERT_EQ(::write(fd.get(), f, 3), 3);
    }
  }

  // A worker's table over the shared node records.
  std::unique_ptr<InodeTable> table() {
    UniqueFd root(::open(dir_.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    auto records = SharedRecords::open(dup_of(nodes_), sizeof(NodeRecord));
    EXPECT_TRUE(records);
    auto t = InodeTable::create(std::move(root), 16, std::move(*records));
    EXPECT_TRUE(t) << t.error().message;
    return std::move(*t);
  }

  Inode& lookup(InodeTable& t, Inode& dir, const std::string& name) {
    auto dfd = t.path_fd(dir);
    EXPECT_TRUE(dfd);
    auto handle = handle_at(dfd->get(), name.c_str(), 0);
    EXPECT_TRUE(handle);
    struct stat st{};
    EXPECT_EQ(::fstatat(dfd->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW), 0);
    return t.remember(*handle, st, dir, name);
  }

  static std::string path(InodeTable& t, Inode& inode) {
    InodeTable::Lock lock(t);
    return t.path_locked(inode).value_or("<none>");
  }

  testutil::TempDir dir_{"bkp-takeover"};
  UniqueFd nodes_ = memfd();
};

TEST_F(TakeoverTest, ASuccessorKnowsEveryIdByItsFileAndPath) {
  fuse_ino_t d_id, a_id, b_id, top_id;
  {
    auto first = table();
    EXPECT_EQ(first->adopted(), 0u);
    Inode& d = lookup(*first, first->root(), "d");
    Inode& a = lookup(*first, d, "a");
    Inode& b = lookup(*first, d, "b");
    lookup(*first, d, "b");  // two lookups held by the kernel
    Inode& top = lookup(*first, first->root(), "top");
    d_id = d.id, a_id = a.id, b_id = b.id, top_id = top.id;
    // A rename through the mount moves the known name; the successor must see the new one.
    ASSERT_EQ(::rename(dir_.sub("d/a").c_str(), dir_.sub("d/a2").c_str()), 0);
    InodeTable::Lock lock(*first);
    first->rename_locked(d, "a", d, "a2", false);
  }
  auto next = table();
  EXPECT_EQ(next->adopted(), 4u);
  EXPECT_EQ(path(*next, next->get(d_id)), "d");
  EXPECT_EQ(path(*next, next->get(a_id)), "d/a2");
  EXPECT_EQ(path(*next, next->get(b_id)), "d/b");
  EXPECT_EQ(path(*next, next->get(top_id)), "top");
  for (fuse_ino_t id : {a_id, b_id}) {
    auto fd = next->reopen(next->get(id), O_RDONLY);
    ASSERT_TRUE(fd) << fd.error().message;
    char buf[3];
    ASSERT_EQ(::read(fd->get(), buf, 3), 3);
    EXPECT_EQ(std::string(buf, 3), id == a_id ? "d/a" : "d/b");
  }
  // Lookup counts carried over: b dies only after both of the kernel's lookups are forgotten.
  next->forget(b_id, 1);
  EXPECT_EQ(path(*next, next->get(b_id)), "d/b");
  next->forget(b_id, 1);
  {
    InodeTable::Lock lock(*next);
    EXPECT_EQ(next->child_locked(next->get(d_id), "b"), nullptr);
  }
  // A new inode takes a free id, never one still held.
  Inode& fresh = lookup(*next, next->root(), "top");
  EXPECT_EQ(fresh.id, top_id);
}

TEST_F(TakeoverTest, ATornRecordIsRefusedAndItsIdAnswersStale) {
  fuse_ino_t a_id;
  {
    auto first = table();
    Inode& d = lookup(*first, first->root(), "d");
    a_id = lookup(*first, d, "a").id;
  }
  {
    // A kill in the middle of an update: the name changed, the checksum did not.
    auto records = SharedRecords::open(dup_of(nodes_), sizeof(NodeRecord));
    ASSERT_TRUE(records);
    auto* rec = static_cast<NodeRecord*>((*records)->find(a_id));
    ASSERT_NE(rec, nullptr);
    rec->name[0] = 'x';
  }
  auto next = table();
  EXPECT_EQ(next->adopted(), 1u);
  Inode& lost = next->get(a_id);
  EXPECT_EQ(&lost, &next->stale());
  auto fd = next->reopen(lost, O_RDONLY);
  ASSERT_FALSE(fd);
  EXPECT_EQ(fd.error().code, ESTALE);
}

TEST_F(TakeoverTest, OpenFilesAreReopenedWithTheirFlagsOnFirstUse) {
  UniqueFd files = memfd();
  int opened = 0;
  auto reopen_as = [&](uint32_t generation) {
    auto records = SharedRecords::open(dup_of(files), sizeof(OpenRecord));
    EXPECT_TRUE(records);
    return std::make_unique<OpenFiles>(
        std::move(*records), generation,
        [&](uint64_t node, int flags, OpenKind kind) -> Result<uint64_t> {
          ++opened;
          EXPECT_EQ(node, 7u);
          EXPECT_EQ(flags, O_RDWR | O_APPEND);
          EXPECT_EQ(kind, OpenKind::kFile);
          return 100 + opened;
        });
  };
  uint64_t fh, other;
  {
    auto first = reopen_as(1);
    fh = *first->add(7, O_RDWR | O_APPEND, OpenKind::kFile, 42);
    other = *first->add(8, O_RDONLY, OpenKind::kDir, 43);
    EXPECT_EQ(*first->get(fh), 42u);
    EXPECT_EQ(first->release(other), std::optional<uint64_t>(43));
  }
  auto next = reopen_as(2);
  EXPECT_EQ(*next->get(fh), 101u);
  EXPECT_EQ(*next->get(fh), 101u) << "reopened once, then kept";
  EXPECT_EQ(opened, 1);
  EXPECT_FALSE(next->get(other)) << "a released fh stays released";
  EXPECT_EQ(next->release(fh), std::optional<uint64_t>(101));
  // Free slots are reused before new ones, under a new fh.
  uint64_t again = *next->add(9, O_RDONLY, OpenKind::kFile, 5);
  uint64_t slot = again & 0xffffffffu;
  EXPECT_TRUE(slot == (fh & 0xffffffffu) || slot == (other & 0xffffffffu));
  EXPECT_NE(again, fh);
  EXPECT_NE(again, other);
  // The predecessor freed `other` and died before answering; the kernel resends that RELEASE
  // after the slot went to a new open, which must stay open.
  EXPECT_EQ(next->release(other), std::nullopt);
  EXPECT_EQ(next->release(fh), std::nullopt);
  EXPECT_EQ(*next->get(again), 5u);
  // The same within one worker: it frees a slot, gives it to the next open and dies before
  // answering the RELEASE, which the kernel resends to its successor.
  EXPECT_EQ(next->release(again), std::optional<uint64_t>(5));
  uint64_t reused = *next->add(10, O_RDONLY, OpenKind::kDir, 6);
  EXPECT_EQ(reused & 0xffffffffu, slot) << "the freed slot is taken again";
  EXPECT_NE(reused, again);
  EXPECT_EQ(next->release(again), std::nullopt);
  EXPECT_EQ(*next->get(reused), 6u);
}

TEST_F(TakeoverTest, TheInitExchangeAndGenerationsSurvive) {
  UniqueFd session = memfd();
  {
    auto first = SessionStore::open(dup_of(session));
    ASSERT_TRUE(first);
    EXPECT_EQ(first->generation(), 1u);
    EXPECT_TRUE(first->init_request().empty());
    ASSERT_TRUE(first->store_init("request bytes", "reply"));
  }
  auto next = SessionStore::open(dup_of(session));
  ASSERT_TRUE(next);
  EXPECT_EQ(next->generation(), 2u);
  EXPECT_EQ(next->init_request(), "request bytes");
  EXPECT_EQ(next->init_reply(), "reply");
  EXPECT_EQ(SessionStore::open(dup_of(session))->generation(), 3u);
}

TEST(WorkerFdsTest, ParsesSevenDescriptorsAndNothingElse) {
  WorkerFds fds{3, 4, 5, 6, 7, 8, 9};
  auto parsed = WorkerFds::parse(fds.format());
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->format(), "3,4,5,6,7,8,9");
  for (const char* bad : {"", "3,4,5,6,7,8", "3,4,5,6,7,8,9,10", "3,4,x,6,7,8,9", "3,4,-5,6,7,8,9",
                          "3,4,5,6,7,8,9,"}) {
    EXPECT_FALSE(WorkerFds::parse(bad)) << bad;
  }
}

}  // namespace
}  // namespace bkp::fs
