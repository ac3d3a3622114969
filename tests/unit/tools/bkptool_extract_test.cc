// Restore extraction: a tgz fed in small chunks (as Data frames arrive) comes out as the same
// tree, with hard links still linked, symlinks still symlinks, modes and times kept; entries
// that try to leave the target are refused; and a stream that breaks is reported as such.
#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/files.h"
#include "tools/extract.h"

namespace bkp::tools {
namespace {

using Bytes = std::vector<uint8_t>;

// Builds a gzip'd pax tar in memory, the format backupd's snapshots use.
class TgzBuilder {
 public:
  TgzBuilder() : a_(archive_write_new()) {
    archive_write_add_filter_gzip(a_);
    archive_write_set_format_pax_restricted(a_);
    archive_write_open(a_, &out_, nullptr, &TgzBuilder::write_cb, nullptr);
  }
  ~TgzBuilder() { archive_write_free(a_); }

  TgzBuilder& dir(const char* name, mode_t mode, time_t mtime = 1000000000) {
    return add(name, AE_IFDIR, mode, "", nullptr, nullptr, mtime);
  }
  TgzBuilder& file(const char* name, const std::string& data, mode_t mode = 0644,
                   time_t mtime = 1000000000) {
    return add(name, AE_IFREG, mode, data, nullptr, nullptr, mtime);
  }
  TgzBuilder& hardlink(const char* name, const char* target) {
    return add(name, AE_IFREG, 0644, "", target, nullptr, 0);
  }
  TgzBuilder& symlink(const char* name, const char* target) {
    return add(name, AE_IFLNK, 0777, "", nullptr, target, 0);
  }
  Bytes finish() {
    archive_write_close(a_);
    return out_;
  }

 private:
  static la_ssize_t write_cb(archive*, void* out, const void* buf, size_t n) {
    auto* bytes = static_cast<Bytes*>(out);
    bytes->insert(bytes->end(), static_cast<const uint8_t*>(buf),
                  static_cast<const uint8_t*>(buf) + n);
    return static_cast<la_ssize_t>(n);
  }
  TgzBuilder& add(const char* name, unsigned type, mode_t mode, const std::string& data,
                  const char* hardlink, const char* symlink, time_t mtime) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, mode);
    archive_entry_set_uid(e, geteuid());
    archive_entry_set_gid(e, getegid());
    archive_entry_set_mtime(e, mtime, 0);
    archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
    if (hardlink != nullptr) archive_entry_set_hardlink(e, hardlink);
    if (symlink != nullptr) archive_entry_set_symlink(e, symlink);
    archive_write_header(a_, e);
    if (!data.empty()) archive_write_data(a_, data.data(), data.size());
    archive_entry_free(e);
    return *this;
  }

  archive* a_;
  Bytes out_;
};

// Hands out `bytes` in chunks of `chunk`, optionally failing once `fail_at` bytes were given.
class ChunkSource : public ByteSource {
 public:
  ChunkSource(Bytes bytes, size_t chunk, size_t fail_at = SIZE_MAX)
      : bytes_(std::move(bytes)), chunk_(chunk), fail_at_(fail_at) {}
  Result<std::span<const uint8_t>> next() override {
    if (pos_ >= fail_at_) return fail(ECONNRESET, "connection to backupd lost");
    size_t n = std::min(chunk_, bytes_.size() - pos_);
    std::span<const uint8_t> out(bytes_.data() + pos_, n);
    pos_ += n;
    return out;
  }
  bool consumed() const { return pos_ == bytes_.size(); }

 private:
  Bytes bytes_;
  size_t chunk_;
  size_t fail_at_;
  size_t pos_ = 0;
};

class ExtractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bkptool-extract-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    target_ = root_ + "/target";
    ASSERT_EQ(mkdir(target_.c_str(), 0755), 0);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  static std::string read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  static struct stat lstat_of(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st;
  }

  std::string root_;
  std::string target_;
};

TEST_F(ExtractTest, RestoresTheTreeFromSmallChunks) {
  std::string big(300000, 'x');
  Bytes tgz = TgzBuilder()
                  .dir("d", 0750, 1500000000)
                  .file("d/f", "hello", 0640, 1600000000)
                  .hardlink("d/g", "d/f")
                  .symlink("s", "d/f")
                  .file("e", "")
                  .file("big", big)
                  .finish();
  ChunkSource source(tgz, 7);
  auto stats = extract_archive(source, target_);
  ASSERT_TRUE(stats.has_value()) << stats.error().message;
  EXPECT_TRUE(source.consumed());
  EXPECT_EQ(stats->files, 5u);
  EXPECT_EQ(stats->dirs, 1u);
  EXPECT_EQ(stats->bytes, 5u + big.size());

  EXPECT_EQ(read(target_ + "/d/f"), "hello");
  EXPECT_EQ(read(target_ + "/big"), big);
  struct stat f = lstat_of(target_ + "/d/f");
  struct stat g = lstat_of(target_ + "/d/g");
  EXPECT_EQ(f.st_ino, g.st_ino) << "hard link lost";
  EXPECT_EQ(f.st_nlink, 2u);
  EXPECT_EQ(f.st_mode & 07777, 0640u);
  EXPECT_EQ(f.st_mtime, 1600000000);
  struct stat d = lstat_of(target_ + "/d");
  EXPECT_EQ(d.st_mode & 07777, 0750u);
  EXPECT_EQ(d.st_mtime, 1500000000) << "directory time must be set after its entries";
  EXPECT_TRUE(S_ISLNK(lstat_of(target_ + "/s").st_mode));
  EXPECT_EQ(std::filesystem::read_symlink(target_ + "/s"), "d/f");
  EXPECT_EQ(lstat_of(target_ + "/e").st_size, 0);
}

TEST_F(ExtractTest, RefusesEntriesThatLeaveTheTarget) {
  std::string outside = root_ + "/outside";
  ASSERT_EQ(mkdir(outside.c_str(), 0755), 0);
  std::string abs = outside + "/abs";
  Bytes tgz = TgzBuilder()
                  .file("ok", "fine")
                  .file("../evil", "x")
                  .file(abs.c_str(), "x")
                  .symlink("l", outside.c_str())
                  .file("l/through", "x")
                  .finish();
  ChunkSource source(tgz, 4096);
  auto stats = extract_archive(source, target_);
  ASSERT_FALSE(stats.has_value());
  EXPECT_NE(stats.error().message.find("3 entries could not be restored"), std::string::npos)
      << stats.error().message;
  EXPECT_EQ(read(target_ + "/ok"), "fine");
  EXPECT_FALSE(std::filesystem::exists(root_ + "/evil"));
  EXPECT_FALSE(std::filesystem::exists(abs));
  EXPECT_FALSE(std::filesystem::exists(outside + "/through"));
}

TEST_F(ExtractTest, ABrokenStreamReportsWhyNotLibarchive) {
  Bytes tgz = TgzBuilder().file("a", std::string(100000, 'a')).file("b", "b").finish();
  ChunkSource source(tgz, 1000, tgz.size() / 2);
  auto stats = extract_archive(source, target_);
  ASSERT_FALSE(stats.has_value());
  EXPECT_EQ(stats.error().message, "connection to backupd lost");
}

// A snapshot damaged on disk: the second header's checksum is broken, so libarchive answers
// ARCHIVE_RETRY with an entry that has no name. It crashed the restore (SIGSEGV); now it is a
// clear error.
TEST_F(ExtractTest, ADamagedHeaderIsAnErrorNotACrash) {
  Bytes tar;
  archive* a = archive_write_new();
  archive_write_set_format_ustar(a);
  archive_write_open(a, &tar, nullptr, [](archive*, void* out, const void* buf, size_t n) {
    auto* bytes = static_cast<Bytes*>(out);
    bytes->insert(bytes->end(), static_cast<const uint8_t*>(buf), static_cast<const uint8_t*>(buf) + n);
    return static_cast<la_ssize_t>(n);
  }, nullptr);
  for (const char* name : {"a", "b"}) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, 1);
    archive_write_header(a, e);
    archive_write_data(a, "x", 1);
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  ASSERT_GT(tar.size(), 1024u + 156);
  tar[1024 + 148] ^= 0x7;  // the second header's checksum field
  ChunkSource source(tar, 116);
  auto stats = extract_archive(source, target_);
  ASSERT_FALSE(stats.has_value());
  EXPECT_EQ(stats.error().code, EIO);
  EXPECT_NE(stats.error().message.find("damaged"), std::string::npos) << stats.error().message;
}

TEST_F(ExtractTest, GarbageIsAnError) {
  ChunkSource source(Bytes(5000, 0x42), 512);
  auto stats = extract_archive(source, target_);
  ASSERT_FALSE(stats.has_value());
  EXPECT_EQ(stats.error().code, EIO);
}

TEST_F(ExtractTest, TheWorkingDirectoryIsRestored) {
  auto before = std::filesystem::current_path();
  ChunkSource source(TgzBuilder().file("a", "a").finish(), 100);
  ASSERT_TRUE(extract_archive(source, target_).has_value());
  EXPECT_EQ(std::filesystem::current_path(), before);
}

TEST_F(ExtractTest, TargetStates) {
  EXPECT_EQ(*inspect_dir(root_ + "/missing"), DirState::kMissing);
  EXPECT_EQ(*inspect_dir(target_), DirState::kEmpty);
  std::ofstream(target_ + "/.hidden") << "x";
  EXPECT_EQ(*inspect_dir(target_), DirState::kNonEmpty);
  auto file = inspect_dir(target_ + "/.hidden");
  ASSERT_FALSE(file.has_value());
  EXPECT_EQ(file.error().code, ENOTDIR);
  ASSERT_TRUE(make_dirs(root_ + "/a/b/c").has_value());
  EXPECT_EQ(*inspect_dir(root_ + "/a/b/c"), DirState::kEmpty);
  EXPECT_FALSE(make_dirs(target_ + "/.hidden/sub").has_value());
}

}  // namespace
}  // namespace bkp::tools
