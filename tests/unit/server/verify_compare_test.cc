// What a verify reports (server/verify_compare.h): every field a user would miss, named with
// both values; nothing for atime, ctime or link counts; a missing directory once, not its
// contents; hard links as groups whatever ids each side uses; content only when both read it;
// and, across two rounds, only what persisted on entries that did not change meanwhile. The manifests of real trees (walk_manifest) are
// compared too, so a byte flipped on disk is found with content digests and not without.
#include "server/verify_compare.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/stream/reconcile.h"
#include "common/unique_fd.h"
#include "tests/testutil/files.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::server {
namespace {

wire::ManifestEntry file(std::string path, uint64_t id, uint64_t size = 10) {
  wire::ManifestEntry e;
  e.path = std::move(path);
  e.mode = S_IFREG | 0644;
  e.uid = 1000;
  e.gid = 1000;
  e.size = size;
  e.mtime_ns = 1'000'000'000;
  e.id = id;
  return e;
}

wire::ManifestEntry dir(std::string path) {
  wire::ManifestEntry e = file(std::move(path), 0, 4096);
  e.mode = S_IFDIR | 0755;
  return e;
}

changes::Manifest manifest(std::vector<wire::ManifestEntry> entries) {
  changes::Manifest m;
  for (auto& e : entries) m.emplace(e.path, e);
  return m;
}

const Sides kSides{"on the node", "in the mirror"};

std::vector<std::string> whats(const std::vector<Difference>& d) {
  std::vector<std::string> out;
  for (const auto& x : d) out.push_back(x.path + " " + x.what);
  return out;
}

TEST(VerifyCompareTest, EqualManifestsHaveNoDifference) {
  auto m = manifest({dir(""), dir("a"), file("a/f", 1), file("g", 2)});
  EXPECT_TRUE(compare_manifests(m, m, kSides).empty());
}

TEST(VerifyCompareTest, EachFieldIsNamedWithBothValues) {
  auto ref = manifest({dir(""), file("f", 1)});
  auto copy = ref;
  auto& f = copy.at("f");
  f.mode = S_IFREG | 0600;
  f.uid = 0;
  f.size = 11;
  f.mtime_ns += 1;
  f.xattr_digest = 7;
  f.xattr_names = std::string("user.a\0", 7);
  auto d = compare_manifests(ref, copy, kSides);
  EXPECT_EQ(whats(d),
            (std::vector<std::string>{"f mode", "f owner", "f size", "f mtime", "f xattrs"}));
  EXPECT_EQ(d[0].detail, "0644 on the node, 0600 in the mirror");
  EXPECT_EQ(d[1].detail, "1000:1000 on the node, 0:1000 in the mirror");
  EXPECT_EQ(d[4].detail, "none on the node, {user.a} in the mirror");
}

TEST(VerifyCompareTest, CtimeIdsAndDirectorySizesAreNotCompared) {
  auto ref = manifest({dir(""), dir("d"), file("f", 1)});
  auto copy = ref;
  copy.at("f").ctime_ns = 99;
  copy.at("f").id = 42;  // another labelling: still one file with one name
  copy.at("d").size = 12288;
  EXPECT_TRUE(compare_manifests(ref, copy, kSides).empty());
}

TEST(VerifyCompareTest, TypeTargetAndDevice) {
  auto link = file("l", 0, 3);
  link.mode = S_IFLNK | 0777;
  link.target = "abc";
  auto dev = file("c", 0, 0);
  dev.mode = S_IFCHR | 0600;
  dev.rdev = 0x0103;
  auto ref = manifest({dir(""), link, dev, file("t", 1)});
  auto copy = ref;
  copy.at("l").target = "abd";
  copy.at("c").rdev = 0x0105;
  copy.at("t") = dir("t");
  auto d = compare_manifests(ref, copy, kSides);
  EXPECT_EQ(whats(d), (std::vector<std::string>{"c device", "l target", "t type"}));
  EXPECT_EQ(d[2].detail, "file on the node, directory in the mirror");
}

TEST(VerifyCompareTest, AMissingDirectoryIsOneDifference) {
  auto ref = manifest({dir(""), dir("a"), dir("a/b"), file("a/b/f", 1), file("ab", 2)});
  auto copy = manifest({dir(""), file("x", 3)});
  auto d = compare_manifests(ref, copy, kSides);
  EXPECT_EQ(whats(d), (std::vector<std::string>{"a missing", "ab missing", "x extra"}));
  EXPECT_EQ(d[0].detail, "a directory on the node, nothing in the mirror");
}

TEST(VerifyCompareTest, HardLinksCompareAsGroups) {
  auto ref = manifest({dir(""), file("a", 1), file("b", 1), file("c", 2)});
  auto same = manifest({dir(""), file("a", 70), file("b", 70), file("c", 71)});
  EXPECT_TRUE(compare_manifests(ref, same, kSides).empty());
  auto split = manifest({dir(""), file("a", 70), file("b", 72), file("c", 71)});
  auto d = compare_manifests(ref, split, kSides);
  EXPECT_EQ(whats(d), (std::vector<std::string>{"b hard links"}));
  EXPECT_EQ(d[0].detail, "a link of a on the node, its own file in the mirror");
}

TEST(VerifyCompareTest, ContentWhenBothSidesReadIt) {
  auto ref = manifest({dir(""), file("f", 1)});
  ref.at("f").content = 5;
  auto copy = ref;
  EXPECT_TRUE(compare_manifests(ref, copy, kSides).empty());
  copy.at("f").content = 6;
  EXPECT_EQ(whats(compare_manifests(ref, copy, kSides)), (std::vector<std::string>{"f content"}));
  copy.at("f").content = 0;  // unreadable in the copy
  auto d = compare_manifests(ref, copy, kSides);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].detail, "digest 0000000000000005 on the node, unreadable in the mirror");
}

TEST(VerifyCompareTest, OnlyWhatDiffersTwicePersists) {
  std::vector<Difference> first{{"a", "size", "1"}, {"b", "mtime", "2"}, {"c", "missing", "3"}};
  std::vector<Difference> second{{"a", "size", "4"}, {"b", "mode", "5"}, {"d", "extra", "6"}};
  EXPECT_EQ(persisting(first, second), (std::vector<Difference>{{"a", "size", "4"}}));
}

// What changed on the reference side since the verify began may be on its way: left out and
// counted. An entry the reference lacks goes by its parent.
TEST(VerifyCompareTest, OnlyEntriesUnchangedSinceTheStartAreSettled) {
  auto ref = manifest({dir(""), dir("d"), file("d/old", 1), file("d/new", 2), file("top", 3)});
  ref.at("d/new").ctime_ns = 500;
  ref.at("d").ctime_ns = 500;
  std::vector<Difference> found{{"d/old", "mtime", ""},
                                {"d/new", "size", ""},
                                {"d/gone", "extra", ""},
                                {"top", "mode", ""},
                                {"x", "extra", ""}};
  size_t changed = 0;
  auto kept = settled(found, ref, 400, changed);
  EXPECT_EQ(whats(kept), (std::vector<std::string>{"d/old mtime", "top mode", "x extra"}));
  EXPECT_EQ(changed, 2u);
}

// Manifests of real trees: a flipped byte keeps size and times (put back), so only the
// content digest finds it.
TEST(VerifyCompareTest, WalkedTreesDifferByContentOnlyWithDigests) {
  testutil::TempDir a("verify-a"), b("verify-b");
  for (const auto* t : {&a, &b}) {
    t->mkdir("d");
    testutil::write_file(t->sub("d/f"), "hello world");
    ASSERT_EQ(::link(t->sub("d/f").c_str(), t->sub("g").c_str()), 0);
    ASSERT_EQ(::symlink("d/f", t->sub("l").c_str()), 0);
  }
  struct stat st{};
  ASSERT_EQ(::stat(a.sub("d/f").c_str(), &st), 0);
  auto set_times = [&](const testutil::TempDir& t) {
    timespec times[2] = {st.st_atim, st.st_mtim};
    for (const char* p : {"d/f", "d", ""}) {
      ASSERT_EQ(::utimensat(AT_FDCWD, t.sub(p).c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
    }
    ASSERT_EQ(::utimensat(AT_FDCWD, t.sub("l").c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
  };
  set_times(a);
  set_times(b);
  UniqueFd fa(::open(a.path().c_str(), O_RDONLY | O_DIRECTORY));
  UniqueFd fb(::open(b.path().c_str(), O_RDONLY | O_DIRECTORY));
  auto walked = [](int fd, uint8_t flags) {
    auto m = stream::walk_manifest(fd, flags);
    EXPECT_TRUE(m) << m.error().message;
    return m ? std::move(*m) : changes::Manifest{};
  };
  auto meta = [&](int fd) { return walked(fd, 0); };
  auto data = [&](int fd) { return walked(fd, wire::kManifestContent); };
  EXPECT_TRUE(compare_manifests(meta(fa.get()), meta(fb.get()), kSides).empty());
  EXPECT_TRUE(compare_manifests(data(fa.get()), data(fb.get()), kSides).empty());
  ASSERT_TRUE(testutil::flip_byte(b.sub("d/f"), 3));
  set_times(b);
  EXPECT_TRUE(compare_manifests(meta(fa.get()), meta(fb.get()), kSides).empty());
  EXPECT_EQ(whats(compare_manifests(data(fa.get()), data(fb.get()), kSides)),
            (std::vector<std::string>{"d/f content", "g content"}));
}

}  // namespace
}  // namespace bkp::server
