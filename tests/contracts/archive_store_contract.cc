// The ArchiveStore contract (see archive_store_contract.h).
#include "tests/contracts/archive_store_contract.h"

#include <random>
#include <vector>

namespace bkp::server {

void ArchiveStoreContract::SetUp() {
  std::string why;
  store_ = GetParam().make(&why);
  if (!store_) GTEST_SKIP() << why;
}

namespace {

std::string random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(rng());
  return out;
}

// Writes bytes as archive id (or its `part`) in pieces of `piece` bytes; commits unless told
// not to.
void put(ArchiveStore& store, const std::string& id, const std::string& bytes, bool commit = true,
         size_t piece = 1 << 20, ArchivePart part = ArchivePart::kArchive) {
  auto sink = store.create(id, part);
  ASSERT_TRUE(sink) << sink.error().message;
  for (size_t at = 0; at < bytes.size(); at += piece) {
    auto n = std::min(piece, bytes.size() - at);
    auto wrote = (*sink)->write(std::span<const char>(bytes.data() + at, n));
    ASSERT_TRUE(wrote) << wrote.error().message;
  }
  if (!commit) return;
  auto size = (*sink)->commit();
  ASSERT_TRUE(size) << size.error().message;
  EXPECT_EQ(*size, bytes.size());
}

std::vector<std::string> ids(ArchiveStore& store) {
  auto listed = store.list();
  EXPECT_TRUE(listed) << listed.error().message;
  std::vector<std::string> out;
  if (listed) {
    for (const auto& a : *listed) out.push_back(a.id);
  }
  return out;
}

std::string read_range(ByteSource& source, uint64_t offset, size_t length) {
  std::string out(length, '\0');
  auto n = source.read_at(offset, std::span<char>(out.data(), out.size()));
  EXPECT_TRUE(n) << n.error().message;
  out.resize(n ? *n : 0);
  return out;
}

}  // namespace

TEST_P(ArchiveStoreContract, ACommittedArchiveListsAndReadsBackAtAnyOffset) {
  const std::string bytes = random_bytes((17 << 20) + 123, 1);  // more than one upload part
  put(*store_, "20261201T000000.000Z", bytes);
  auto listed = store_->list();
  ASSERT_TRUE(listed) << listed.error().message;
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id, "20261201T000000.000Z");
  EXPECT_EQ((*listed)[0].bytes, bytes.size());

  auto source = store_->open("20261201T000000.000Z", ArchivePart::kArchive);
  ASSERT_TRUE(source) << source.error().message;
  EXPECT_EQ((*source)->size(), bytes.size());
  EXPECT_EQ(read_range(**source, 0, 4096), bytes.substr(0, 4096));
  EXPECT_EQ(read_range(**source, 9 << 20, 9 << 20), bytes.substr(9 << 20, 9 << 20));
  EXPECT_EQ(read_range(**source, bytes.size() - 100, 4096), bytes.substr(bytes.size() - 100))
      << "a read across the end stops at it";
  EXPECT_EQ(read_range(**source, bytes.size(), 10), "");
  auto digests = digest_source(**source);
  ASSERT_TRUE(digests) << digests.error().message;
  PartHasher expected;
  expected.feed(bytes);
  EXPECT_EQ(*digests, expected.finish());
}

TEST_P(ArchiveStoreContract, AnArchiveNotCommittedLeavesNothing) {
  // Over one S3 upload part, so an S3 store has begun an upload that it must abort.
  put(*store_, "20261201T000000.000Z", random_bytes(17 << 20, 2), /*commit=*/false);
  EXPECT_EQ(ids(*store_), std::vector<std::string>{});
  auto source = store_->open("20261201T000000.000Z", ArchivePart::kArchive);
  ASSERT_FALSE(source);
  EXPECT_EQ(source.error().code, ENOENT) << source.error().message;
  EXPECT_EQ(store_->remove_partial(), 0u) << "the discarded sink left a partial archive";
}

TEST_P(ArchiveStoreContract, ListsNewestFirstAndRotationKeepsTheNewest) {
  for (const char* id : {"20261201T000002.000Z", "20261201T000000.000Z", "20261201T000001.000Z",
                         "20261201T000003.000Z"}) {
    put(*store_, id, std::string(100, id[16]));
  }
  EXPECT_EQ(ids(*store_), (std::vector<std::string>{"20261201T000003.000Z", "20261201T000002.000Z",
                                                    "20261201T000001.000Z", "20261201T000000.000Z"}));
  auto rotated = rotate_archives(*store_, 2);
  ASSERT_TRUE(rotated) << rotated.error().message;
  EXPECT_EQ(*rotated, (std::vector<std::string>{"20261201T000001.000Z", "20261201T000000.000Z"}));
  EXPECT_EQ(ids(*store_), (std::vector<std::string>{"20261201T000003.000Z", "20261201T000002.000Z"}));
  auto gone = store_->open("20261201T000000.000Z", ArchivePart::kArchive);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ENOENT) << gone.error().message;
  EXPECT_TRUE(store_->remove("20261201T000000.000Z")) << "removing what is gone is no error";
}

TEST_P(ArchiveStoreContract, AnEmptyArchiveIsAnArchive) {
  put(*store_, "20261201T000000.000Z", "");
  auto source = store_->open("20261201T000000.000Z", ArchivePart::kArchive);
  ASSERT_TRUE(source) << source.error().message;
  EXPECT_EQ((*source)->size(), 0u);
  EXPECT_EQ(ids(*store_), std::vector<std::string>{"20261201T000000.000Z"});
}

TEST_P(ArchiveStoreContract, FileIdsAreKeptBesideTheirArchiveAndGoWithIt) {
  const std::string archive = random_bytes(5000, 3), file_ids = random_bytes(300, 4);
  put(*store_, "20261201T000000.000Z", archive);
  put(*store_, "20261201T000000.000Z", file_ids, true, 1 << 20, ArchivePart::kFileIds);
  put(*store_, "20261201T000001.000Z", archive);  // without file ids
  EXPECT_EQ(ids(*store_), (std::vector<std::string>{"20261201T000001.000Z", "20261201T000000.000Z"}))
      << "file ids are no archive";
  auto source = store_->open("20261201T000000.000Z", ArchivePart::kFileIds);
  ASSERT_TRUE(source) << source.error().message;
  EXPECT_EQ(read_range(**source, 0, 1000), file_ids);
  auto none = store_->open("20261201T000001.000Z", ArchivePart::kFileIds);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ENOENT) << none.error().message;

  ASSERT_TRUE(store_->remove("20261201T000000.000Z"));
  auto gone = store_->open("20261201T000000.000Z", ArchivePart::kFileIds);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ENOENT) << gone.error().message;
  EXPECT_TRUE(store_->remove("20261201T000001.000Z")) << "an archive without file ids";
  EXPECT_EQ(ids(*store_), std::vector<std::string>{});
}

}  // namespace bkp::server
