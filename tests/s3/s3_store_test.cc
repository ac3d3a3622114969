// S3ArchiveStore (server/s3_store.h) against a real radosgw: the ArchiveStore contract, and what
// only an object store has: uploads a crash left open, removed at recovery.
#include "server/s3_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "tests/contracts/archive_store_contract.h"
#include "tests/s3/s3_env.h"

namespace bkp::server {
namespace {

constexpr const char* kBucket = "bkp-archive-stores";

// A store under a prefix no other test uses (its keys start with *prefix, if asked); null (why
// set) without a radosgw.
std::unique_ptr<S3ArchiveStore> fresh_store(std::string* why, std::string* prefix = nullptr) {
  auto credentials = test_s3_credentials(why);
  if (!credentials) return nullptr;
  S3Location location{kBucket, "stores/"};
  if (auto ready = prepare_bucket(*credentials, location); !ready) {
    *why = ready.error().message;
    return nullptr;
  }
  static int n = 0;
  const std::string volume = "run" + std::to_string(::getpid()) + "-" + std::to_string(++n);
  if (prefix) *prefix = location.prefix + volume + "/";
  return std::make_unique<S3ArchiveStore>(std::make_shared<const S3Credentials>(*credentials),
                                          location, volume);
}

INSTANTIATE_TEST_SUITE_P(S3, ArchiveStoreContract,
                         testing::Values(StoreMaker{"s3", [](std::string* why) {
                           return std::unique_ptr<ArchiveStore>(fresh_store(why));
                         }}),
                         [](const auto& info) { return info.param.name; });

TEST(S3ArchiveStoreTest, UploadsLeftOpenByACrashAreAbortedAtRecovery) {
  std::string why, prefix;
  auto store = fresh_store(&why, &prefix);
  if (!store) GTEST_SKIP() << why;
  auto credentials = test_s3_credentials(&why);
  ASSERT_TRUE(credentials);
  auto client = S3Client::create(*credentials);
  ASSERT_TRUE(client);
  // What a kill -9 in the middle of an archive leaves: an upload with a part, never finished.
  auto upload = S3MultipartUpload::begin(*client, kBucket, prefix + "20261201T000000.000Z.tgz");
  ASSERT_TRUE(upload) << upload.error().message;
  ASSERT_TRUE(upload->upload_part(1, std::string(5 << 20, 'x')));
  auto open = client->list_uploads(kBucket, prefix);
  ASSERT_TRUE(open) << open.error().message;
  ASSERT_EQ(open->size(), 1u);

  EXPECT_EQ(store->list()->size(), 0u) << "an unfinished upload is not an archive";
  EXPECT_EQ(store->remove_partial(), 1u);
  auto left = client->list_uploads(kBucket, prefix);
  ASSERT_TRUE(left) << left.error().message;
  EXPECT_EQ(left->size(), 0u);
}

TEST(S3ArchiveStoreTest, BadCredentialsFailWithTheStoresReason) {
  std::string why;
  auto credentials = test_s3_credentials(&why);
  if (!credentials) GTEST_SKIP() << why;
  credentials->secret_key = "not-the-secret";
  S3ArchiveStore store(std::make_shared<const S3Credentials>(*credentials),
                       S3Location{kBucket, ""}, "web1/srv");
  auto sink = store.create("20261201T000000.000Z", ArchivePart::kArchive);
  ASSERT_TRUE(sink) << "making a sink asks nothing of the store yet";
  ASSERT_TRUE((*sink)->write("abc"));
  auto committed = (*sink)->commit();
  ASSERT_FALSE(committed);
  EXPECT_EQ(committed.error().code, EACCES) << committed.error().message;
  EXPECT_NE(committed.error().message.find("SignatureDoesNotMatch"), std::string::npos)
      << committed.error().message;
  auto listed = store.list();
  ASSERT_FALSE(listed);
  EXPECT_EQ(listed.error().code, EACCES) << listed.error().message;
}

}  // namespace
}  // namespace bkp::server
