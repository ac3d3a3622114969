// Baseline scan (common/changes/scan.h): a baseline must carry everything the live stream
// carries, or a volume registered with data already in it loses it silently. Each test builds a
// small tree on the local filesystem, scans it and reads the ops back as one line each
// ("link s2 -> s", "xattr d user.k=v"), so an expectation reads like the stream it checks. The
// last test plays a scan into an Applier, the receiver's half, and checks the copy.
#include "common/changes/scan.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/changes/applier.h"
#include "common/unique_fd.h"

namespace bkp::changes {
namespace {

using wire::OpKind;

class ScanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bkp-scan-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    root_ = base_ + "/src";
    ASSERT_EQ(mkdir(root_.c_str(), 0755), 0);
  }
  void TearDown() override { std::filesystem::remove_all(base_); }

  std::string at(const std::string& rel) const { return root_ + "/" + rel; }

  void put(const std::string& rel, const std::string& data) {
    UniqueFd fd(open(at(rel).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd) << rel;
    ASSERT_EQ(write(fd.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
  }
  void pwrite_at(const std::string& rel, off_t offset, const std::string& data) {
    UniqueFd fd(open(at(rel).c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(fd) << rel;
    ASSERT_EQ(pwrite(fd.get(), data.data(), data.size(), offset),
              static_cast<ssize_t>(data.size()));
  }
  void set_xattr(const std::string& rel, const std::string& name, const std::string& value) {
    ASSERT_EQ(lsetxattr(at(rel).c_str(), name.c_str(), value.data(), value.size(), 0), 0)
        << rel << " " << name << ": " << strerror(errno);
  }

  // Scans the tree; ids are 1, 2, ... in the order files are identified (ids_ maps them back).
  Batch scan() {
    UniqueFd fd(open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    EXPECT_TRUE(fd);
    auto batch = scan_tree(fd.get(), [this](int, const char*, const struct stat& st) {
      auto [it, added] = id_of_ino_.emplace(st.st_ino, id_of_ino_.size() + 1);
      return std::optional<FileRef>(FileRef{it->second, ""});
    });
    EXPECT_TRUE(batch) << batch.error().message;
    return batch ? std::move(*batch) : Batch{};
  }

  // The id the scan gave the file at rel.
  uint64_t id(const std::string& rel) const {
    struct stat st{};
    if (lstat(at(rel).c_str(), &st) != 0) return 0;
    auto it = id_of_ino_.find(st.st_ino);
    return it == id_of_ino_.end() ? 0 : it->second;
  }

  // One line per op of the kinds that matter here; files by "#id".
  static std::vector<std::string> lines(const Batch& b) {
    std::vector<std::string> out;
    for (const auto& op : b.ops) {
      std::string who = op.id != 0 ? "#" + std::to_string(op.id) : op.path.empty() ? "." : op.path;
      switch (op.kind) {
        case OpKind::kMkdir: out.push_back("mkdir " + who); break;
        case OpKind::kCreate: out.push_back("create " + op.path + " " + who); break;
        case OpKind::kSymlink: out.push_back("symlink " + who + " -> " + op.target); break;
        case OpKind::kMknod: out.push_back("mknod " + who); break;
        case OpKind::kLink: out.push_back("link " + op.path + " -> " + (op.id ? who : op.target)); break;
        case OpKind::kAttr: out.push_back("attr " + who); break;
        case OpKind::kSetXattr: out.push_back("xattr " + who + " " + op.name + "=" + op.value); break;
        default: break;
      }
    }
    return out;
  }

  static size_t index_of(const std::vector<std::string>& v, const std::string& line) {
    auto it = std::find(v.begin(), v.end(), line);
    EXPECT_NE(it, v.end()) << "no '" << line << "' among the ops";
    return static_cast<size_t>(it - v.begin());
  }

  static size_t count(const std::vector<std::string>& v, const std::string& prefix) {
    return static_cast<size_t>(std::count_if(
        v.begin(), v.end(), [&](const std::string& l) { return l.rfind(prefix, 0) == 0; }));
  }

  static std::map<uint64_t, uint64_t> regions(const Batch& b, uint64_t id) {
    for (const auto& f : b.files) {
      if (f.ref.id == id) return f.extents.ranges();
    }
    ADD_FAILURE() << "no file #" << id << " in the batch";
    return {};
  }

  std::string base_, root_;
  std::map<ino_t, uint64_t> id_of_ino_;
};

TEST_F(ScanTest, EmitsTheXattrsOfFilesDirectoriesAndTheRoot) {
  ASSERT_EQ(mkdir(at("d").c_str(), 0755), 0);
  put("d/f", "data");
  set_xattr("d/f", "user.file", "one");
  set_xattr("d", "user.dir", "two");
  set_xattr("d", "user.also", std::string("bin\0ary", 7));
  set_xattr(".", "user.root", "three");

  Batch b = scan();
  auto l = lines(b);
  std::string f = "#" + std::to_string(id("d/f"));
  // A regular file's by id, right after it is created; a directory's after its contents and
  // before its Attr; the root's last, before the root's Attr.
  EXPECT_EQ(index_of(l, "xattr " + f + " user.file=one"), index_of(l, "create d/f " + f) + 1);
  size_t dir_xattr = index_of(l, "xattr d user.also=" + std::string("bin\0ary", 7));
  EXPECT_EQ(index_of(l, "xattr d user.dir=two"), dir_xattr + 1);
  EXPECT_GT(dir_xattr, index_of(l, "create d/f " + f));
  EXPECT_EQ(index_of(l, "attr d"), dir_xattr + 2);
  EXPECT_EQ(l[l.size() - 2], "xattr . user.root=three");
  EXPECT_EQ(l.back(), "attr .");
  EXPECT_EQ(count(l, "xattr "), 4u);
}

TEST_F(ScanTest, EmitsTrustedXattrsOfSymlinksAndFifos) {
  if (geteuid() != 0) GTEST_SKIP() << "trusted.* needs CAP_SYS_ADMIN";
  ASSERT_EQ(symlink("nowhere", at("s").c_str()), 0);
  ASSERT_EQ(mkfifo(at("p").c_str(), 0600), 0);
  set_xattr("s", "trusted.sym", "on the link itself");
  set_xattr("p", "trusted.fifo", "x");

  auto l = lines(scan());
  EXPECT_EQ(index_of(l, "xattr s trusted.sym=on the link itself"),
            index_of(l, "symlink s -> nowhere") + 1);
  EXPECT_EQ(index_of(l, "xattr p trusted.fifo=x"), index_of(l, "mknod p") + 1);
}

// The order names come out of readdir is the filesystem's: whichever comes first is created,
// the other is linked to it.
TEST_F(ScanTest, ASecondNameOfASymlinkIsALinkNotASecondSymlink) {
  ASSERT_EQ(symlink("target", at("s1").c_str()), 0);
  ASSERT_EQ(link(at("s1").c_str(), at("s2").c_str()), 0);  // link(2) does not follow
  if (geteuid() == 0) set_xattr("s1", "trusted.k", "v");

  auto l = lines(scan());
  EXPECT_EQ(count(l, "symlink "), 1u);
  bool s1_first = std::find(l.begin(), l.end(), "symlink s1 -> target") != l.end();
  std::string first = s1_first ? "s1" : "s2", second = s1_first ? "s2" : "s1";
  EXPECT_GT(index_of(l, "link " + second + " -> " + first),
            index_of(l, "symlink " + first + " -> target"));
  if (geteuid() == 0) {
    EXPECT_EQ(count(l, "xattr "), 1u) << "the inode's xattrs, once";
  }
}

TEST_F(ScanTest, ASecondNameOfAFifoIsALink) {
  ASSERT_EQ(mkdir(at("d").c_str(), 0755), 0);
  ASSERT_EQ(mkfifo(at("p").c_str(), 0640), 0);
  ASSERT_EQ(link(at("p").c_str(), at("d/p2").c_str()), 0);

  auto l = lines(scan());
  EXPECT_EQ(count(l, "mknod "), 1u);
  bool p_first = std::find(l.begin(), l.end(), "mknod p") != l.end();
  std::string first = p_first ? "p" : "d/p2", second = p_first ? "d/p2" : "p";
  EXPECT_GT(index_of(l, "link " + second + " -> " + first), index_of(l, "mknod " + first));
}

TEST_F(ScanTest, ASecondNameOfARegularFileIsALinkById) {
  put("f", "x");
  ASSERT_EQ(link(at("f").c_str(), at("g").c_str()), 0);
  Batch b = scan();
  auto l = lines(b);
  EXPECT_EQ(count(l, "create "), 1u);
  EXPECT_EQ(count(l, "link "), 1u);
  EXPECT_EQ(b.files.size(), 1u);
}

TEST_F(ScanTest, ASparseFileShipsOnlyItsDataRegions) {
  put("sparse", "");
  ASSERT_EQ(truncate(at("sparse").c_str(), 1 << 20), 0);
  pwrite_at("sparse", 0, "head");
  pwrite_at("sparse", 512 << 10, std::string(4096, 'm'));
  Batch b = scan();
  EXPECT_EQ(regions(b, id("sparse")),
            (std::map<uint64_t, uint64_t>{{0, 4096}, {512 << 10, (512 << 10) + 4096}}));
  for (const auto& op : b.ops) {
    if (op.kind == OpKind::kTruncate) {
      EXPECT_EQ(op.size, 1u << 20);
    }
  }
}

// st_blocks counts an external xattr block too: 8 KiB with one data block and one xattr block
// looks fully allocated, yet its first 4 KiB are a hole.
TEST_F(ScanTest, AHoleIsFoundEvenWhenAnXattrBlockFillsUpStBlocks) {
  put("f", "");
  pwrite_at("f", 4096, std::string(4096, 'd'));
  set_xattr("f", "user.big", std::string(3000, 'x'));
  struct stat st{};
  ASSERT_EQ(stat(at("f").c_str(), &st), 0);
  if (static_cast<uint64_t>(st.st_blocks) * 512 < 8192) GTEST_SKIP() << "xattr stored in the inode";
  Batch b = scan();
  EXPECT_EQ(regions(b, id("f")), (std::map<uint64_t, uint64_t>{{4096, 8192}}));
}

// The receiver's half: what the scan emits, played into an Applier, gives back the same links,
// xattrs and holes.
TEST_F(ScanTest, AnApplierRebuildsLinksXattrsAndHolesFromTheScan) {
  ASSERT_EQ(mkdir(at("d").c_str(), 0750), 0);
  put("d/sparse", "");
  ASSERT_EQ(truncate(at("d/sparse").c_str(), 256 << 10), 0);
  pwrite_at("d/sparse", 128 << 10, "island");
  set_xattr("d/sparse", "user.k", "file");
  set_xattr("d", "user.k", "dir");
  ASSERT_EQ(symlink("d/sparse", at("s1").c_str()), 0);
  ASSERT_EQ(link(at("s1").c_str(), at("d/s2").c_str()), 0);
  ASSERT_EQ(mkfifo(at("p1").c_str(), 0600), 0);
  ASSERT_EQ(link(at("p1").c_str(), at("d/p2").c_str()), 0);
  bool root = geteuid() == 0;
  if (root) set_xattr("s1", "trusted.k", "symlink");
  if (root) set_xattr("p1", "trusted.k", "fifo");

  Batch b = scan();
  auto applier = Applier::open(base_, "copy", "ids");
  ASSERT_TRUE(applier) << applier.error().message;
  for (const auto& op : b.ops) {
    auto r = (*applier)->apply(op);
    ASSERT_TRUE(r) << r.error().message;
  }
  ASSERT_EQ(b.files.size(), 1u);  // d/sparse
  UniqueFd src(open(at("d/sparse").c_str(), O_RDONLY | O_CLOEXEC));
  for (const auto& f : b.files) {
    for (const auto& [start, end] : f.extents.ranges()) {
      std::vector<uint8_t> buf(end - start);
      ASSERT_EQ(pread(src.get(), buf.data(), buf.size(), static_cast<off_t>(start)),
                static_cast<ssize_t>(buf.size()));
      wire::Write w;
      w.id = f.ref.id;
      w.offset = start;
      w.data = buf;
      ASSERT_TRUE((*applier)->write(w));
    }
  }

  auto copy = [&](const std::string& rel) { return base_ + "/copy/" + rel; };
  auto ino = [](const std::string& path) {
    struct stat st{};
    return lstat(path.c_str(), &st) == 0 ? st.st_ino : 0;
  };
  auto xattr = [](const std::string& path, const char* name) {
    char buf[64];
    ssize_t n = lgetxattr(path.c_str(), name, buf, sizeof buf);
    return n < 0 ? std::string("(") + strerror(errno) + ")" : std::string(buf, n);
  };
  EXPECT_EQ(ino(copy("s1")), ino(copy("d/s2")));
  EXPECT_EQ(ino(copy("p1")), ino(copy("d/p2")));
  EXPECT_EQ(xattr(copy("d/sparse"), "user.k"), "file");
  EXPECT_EQ(xattr(copy("d"), "user.k"), "dir");
  if (root) {
    EXPECT_EQ(xattr(copy("d/s2"), "trusted.k"), "symlink");
    EXPECT_EQ(xattr(copy("d/p2"), "trusted.k"), "fifo");
  }
  UniqueFd fd(open(copy("d/sparse").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  EXPECT_EQ(lseek(fd.get(), 0, SEEK_DATA), 128 << 10);
  EXPECT_EQ(lseek(fd.get(), 128 << 10, SEEK_HOLE), (128 << 10) + 4096);
}

}  // namespace
}  // namespace bkp::changes

namespace bkp::changes {
namespace {

// The warmer sees every entry (files, nested directories, a symlink it does not follow: followed,
// it would walk the test's whole directory again and again) and stops when destroyed.
TEST_F(ScanTest, TreeWarmerVisitsEveryEntryWithoutFollowingSymlinks) {
  ASSERT_EQ(mkdir(at("a").c_str(), 0755), 0);
  ASSERT_EQ(mkdir(at("a/b").c_str(), 0755), 0);
  put("a/b/f", "x");
  put("g", "y");
  ASSERT_EQ(symlink(base_.c_str(), at("a/up").c_str()), 0);
  UniqueFd fd(open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  {
    TreeWarmer warm(fd.get());
    // Bounded waits on the count itself: the first for the 5 entries, the second gives a walk
    // that followed the symlink time to show more (a slow machine can only make it pass).
    for (int i = 0; i < 5000 && warm.visited() < 5; ++i) usleep(1000);
    EXPECT_EQ(warm.visited(), 5u);  // a, a/b, a/b/f, a/up, g
    for (int i = 0; i < 100 && warm.visited() == 5; ++i) usleep(1000);
    EXPECT_EQ(warm.visited(), 5u);
  }
  { TreeWarmer stopped(fd.get()); }  // destroyed at once: joins without hanging
}

}  // namespace
}  // namespace bkp::changes
