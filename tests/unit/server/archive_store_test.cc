// LocalArchiveStore (server/archive_store.h): the ArchiveStore contract on a directory, and
// what only a directory has: the temporary name while an archive is written. And a snapshot's
// file ids stored beside it.
#include "server/archive_store.h"

#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "server/file_ids.h"
#include "tests/contracts/archive_store_contract.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::server {
namespace {

// One directory per store made; they go when the test binary ends.
testutil::TempDir& stores_dir() {
  static testutil::TempDir dir("bkp-stores");
  return dir;
}

INSTANTIATE_TEST_SUITE_P(
    Local, ArchiveStoreContract,
    testing::Values(StoreMaker{"local", [](std::string*) -> std::unique_ptr<ArchiveStore> {
      static int n = 0;
      return std::make_unique<LocalArchiveStore>(stores_dir().sub("s" + std::to_string(++n)));
    }}),
    [](const auto& info) { return info.param.name; });

TEST(LocalArchiveStoreTest, AnArchiveIsATempFileUntilCommittedAndLeftoversGoAtRecovery) {
  testutil::TempDir dir("bkp-store");
  LocalArchiveStore store(dir.sub("snaps"));
  auto sink = store.create("20261201T000000.000Z", ArchivePart::kArchive);
  ASSERT_TRUE(sink) << sink.error().message;
  ASSERT_TRUE((*sink)->write("abc"));
  const std::string tmp = dir.sub("snaps") + "/.tmp-20261201T000000.000Z.tgz";
  EXPECT_TRUE(std::filesystem::exists(tmp));
  ASSERT_TRUE((*sink)->commit());
  EXPECT_FALSE(std::filesystem::exists(tmp));
  EXPECT_TRUE(std::filesystem::exists(dir.sub("snaps") + "/20261201T000000.000Z.tgz"));

  // What a kill -9 mid-write leaves: a temp file no sink will discard.
  auto crashed = store.create("20261201T000001.000Z", ArchivePart::kArchive);
  ASSERT_TRUE(crashed);
  ASSERT_EQ(::link((dir.sub("snaps") + "/.tmp-20261201T000001.000Z.tgz").c_str(),
                   (dir.sub("snaps") + "/.tmp-left.tgz").c_str()), 0);
  crashed->reset();
  EXPECT_EQ(store.remove_partial(), 1u);
  EXPECT_EQ(store.list()->size(), 1u);
}

// File ids (server/file_ids.h) read back as written; none is nullopt; a damaged object is an
// error (a seeding then leaves the volume to its node), never a wrong map.
TEST(FileIdsTest, StoredIdsLoadBackAndDamagedOnesAreRefused) {
  testutil::TempDir dir("bkp-file-ids");
  LocalArchiveStore store(dir.sub("snaps"));
  FileIdsWriter writer;
  writer.add("a/b", {7, 123});
  writer.add("c", {9, 0});
  ASSERT_TRUE(store_file_ids(store, "20261201T000000.000Z", writer));
  auto loaded = load_file_ids(store, "20261201T000000.000Z");
  ASSERT_TRUE(loaded && *loaded) << (loaded ? "none" : loaded.error().message);
  ASSERT_EQ((*loaded)->size(), 2u);
  EXPECT_EQ((*loaded)->at("a/b").id, 7u);
  EXPECT_EQ((*loaded)->at("a/b").source_ctime, 123);
  EXPECT_EQ((*loaded)->at("c").id, 9u);

  auto none = load_file_ids(store, "20261201T000001.000Z");
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_FALSE(*none);

  for (const std::string& damaged : {std::string("not file ids"),
                                     std::string("bkp-file-ids 1\n") + "garbage"}) {
    auto sink = store.create("20261201T000002.000Z", ArchivePart::kFileIds);
    ASSERT_TRUE(sink);
    ASSERT_TRUE((*sink)->write(damaged));
    ASSERT_TRUE((*sink)->commit());
    auto refused = load_file_ids(store, "20261201T000002.000Z");
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, EBADMSG) << refused.error().message;
  }
}

}  // namespace
}  // namespace bkp::server
