// S3Client against a real radosgw (tests/scale/ceph.sh, started by a CTest fixture), since what
// matters is what a real store accepts: SigV4 as curl signs it, the query-string quirks, key
// encoding, pagination and multipart semantics. $BKP_TEST_S3_ENV names the cluster's env file;
// without it (the binary run by hand) the store tests skip and say how to run them. The
// unreachable and silent endpoint tests need no store and always run.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <string>

#include "common/unique_fd.h"
#include "server/s3_client.h"
#include "tests/s3/s3_env.h"
#include "tests/testutil/files.h"

namespace bkp::server {
namespace {

constexpr size_t kMiB = 1 << 20;

std::string bytes(size_t n, uint64_t seed) {
  auto data = testutil::random_bytes(n, seed);
  return std::string(data.begin(), data.end());
}

class S3ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    auto credentials = test_s3_credentials(&why);
    if (!credentials) GTEST_SKIP() << why;
    credentials_ = *credentials;
    auto client = S3Client::create(credentials_);
    ASSERT_TRUE(client) << client.error().message;
    client_.emplace(std::move(*client));
    // One bucket per test, named after it, so tests never see each other's objects.
    bucket_ = "bkp-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::transform(bucket_.begin(), bucket_.end(), bucket_.begin(), ::tolower);
    auto created = client_->create_bucket(bucket_);
    ASSERT_TRUE(created) << created.error().message;
    // Emptied, so a second run against the same cluster starts from the same state.
    auto left = client_->list_objects(bucket_, "");
    ASSERT_TRUE(left) << left.error().message;
    for (const S3Object& object : *left) ASSERT_TRUE(client_->delete_object(bucket_, object.key));
  }

  S3Client& s3() { return *client_; }
  void put(const std::string& key, const std::string& body) {
    auto put = s3().put_object(bucket_, key, body);
    ASSERT_TRUE(put) << put.error().message;
  }
  std::optional<uint64_t> head(const std::string& key) {
    auto size = s3().head_object(bucket_, key);
    EXPECT_TRUE(size) << size.error().message;
    return size ? *size : std::nullopt;
  }
  std::string get(const std::string& key, uint64_t offset, uint64_t length) {
    auto got = s3().get_range(bucket_, key, offset, length);
    EXPECT_TRUE(got) << got.error().message;
    return got ? *got : std::string();
  }
  std::vector<std::string> keys(const std::string& prefix, int page_size) {
    auto listed = s3().list_objects(bucket_, prefix, page_size);
    EXPECT_TRUE(listed) << listed.error().message;
    std::vector<std::string> keys;
    for (const S3Object& object : listed.value_or(std::vector<S3Object>{})) {
      keys.push_back(object.key);
    }
    return keys;
  }

  S3Credentials credentials_;
  std::optional<S3Client> client_;
  std::string bucket_;
};

TEST_F(S3ClientTest, CreateBucketTwiceSucceeds) {
  auto again = s3().create_bucket(bucket_);
  EXPECT_TRUE(again) << again.error().message;
  EXPECT_EQ(keys("", 1000), std::vector<std::string>{});
}

TEST_F(S3ClientTest, PutHeadAndRanges) {
  std::string body = bytes(100000, 1);
  put("snap/one", body);
  EXPECT_EQ(head("snap/one"), 100000u);
  EXPECT_EQ(get("snap/one", 0, 100000), body);
  EXPECT_EQ(get("snap/one", 12345, 1000), body.substr(12345, 1000));
  EXPECT_EQ(get("snap/one", 99990, 10), body.substr(99990));
  // A range running past the end gives what there is.
  EXPECT_EQ(get("snap/one", 99990, 500), body.substr(99990));
  EXPECT_EQ(get("snap/one", 5, 0), "");
  for (uint64_t past : {100000u, 200000u}) {
    auto beyond = s3().get_range(bucket_, "snap/one", past, 10);
    ASSERT_FALSE(beyond);
    EXPECT_EQ(beyond.error().code, ERANGE);
    EXPECT_NE(beyond.error().message.find("416 InvalidRange"), std::string::npos)
        << beyond.error().message;
  }
  put("snap/one", "short");  // replaced whole
  EXPECT_EQ(head("snap/one"), 5u);
  put("snap/empty", "");
  EXPECT_EQ(head("snap/empty"), 0u);
}

TEST_F(S3ClientTest, MissingObjectIsNotFound) {
  EXPECT_EQ(head("nothing/here"), std::nullopt);
  auto got = s3().get_range(bucket_, "nothing/here", 0, 10);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, ENOENT);
  EXPECT_NE(got.error().message.find("S3 GET " + bucket_ + "/nothing/here: 404 NoSuchKey"),
            std::string::npos) << got.error().message;
  auto listed = s3().list_objects("bkp-no-such-bucket", "", 1000);
  ASSERT_FALSE(listed);
  EXPECT_NE(listed.error().message.find("404 NoSuchBucket"), std::string::npos)
      << listed.error().message;
}

TEST_F(S3ClientTest, KeysNeedingEncodingRoundTrip) {
  const std::string key = "dir one/a+b&c=d%e?f#g~h/\xc3\xa9t\xc3\xa9 [1].tgz";
  put(key, "payload");
  EXPECT_EQ(head(key), 7u);
  EXPECT_EQ(get(key, 2, 3), "ylo");
  EXPECT_EQ(keys("dir one/", 1000), std::vector<std::string>{key});
  ASSERT_TRUE(s3().delete_object(bucket_, key));
  EXPECT_EQ(head(key), std::nullopt);
}

TEST_F(S3ClientTest, ListFollowsContinuationTokens) {
  std::vector<std::string> expected;
  for (int i = 0; i < 7; ++i) {
    expected.push_back("vol/web1/part-" + std::to_string(i));
    put(expected.back(), bytes(100 + i, i));
  }
  put("vol/web2/part-0", "x");
  put("other", "y");
  // Pages of 2 keys: four requests, three continuation tokens.
  EXPECT_EQ(keys("vol/web1/", 2), expected);
  EXPECT_EQ(keys("vol/", 3).size(), 8u);
  EXPECT_EQ(keys("", 1).size(), 9u);
  EXPECT_EQ(keys("none/", 2), std::vector<std::string>{});
  auto listed = s3().list_objects(bucket_, "vol/web1/part-3", 2);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].size, 103u);
}

TEST_F(S3ClientTest, DeleteRemovesAndIsIdempotent) {
  put("gone", "soon");
  ASSERT_TRUE(s3().delete_object(bucket_, "gone"));
  EXPECT_EQ(head("gone"), std::nullopt);
  EXPECT_EQ(keys("", 1000), std::vector<std::string>{});
  auto again = s3().delete_object(bucket_, "gone");
  EXPECT_TRUE(again) << again.error().message;
}

TEST_F(S3ClientTest, MultipartObjectAppearsOnlyWhenComplete) {
  std::string part1 = bytes(5 * kMiB, 11), part2 = bytes(5 * kMiB, 12), part3 = bytes(kMiB / 3, 13);
  auto upload = S3MultipartUpload::begin(s3(), bucket_, "big/archive.tgz");
  ASSERT_TRUE(upload) << upload.error().message;
  EXPECT_FALSE(upload->upload_id().empty());
  // Out of order: complete() joins by part number.
  for (auto [number, part] : {std::pair{3, &part3}, {1, &part1}, {2, &part2}}) {
    auto uploaded = upload->upload_part(number, *part);
    ASSERT_TRUE(uploaded) << uploaded.error().message;
  }
  EXPECT_EQ(head("big/archive.tgz"), std::nullopt);
  EXPECT_EQ(keys("big/", 1000), std::vector<std::string>{});
  auto completed = upload->complete();
  ASSERT_TRUE(completed) << completed.error().message;
  std::string whole = part1 + part2 + part3;
  EXPECT_EQ(head("big/archive.tgz"), whole.size());
  EXPECT_EQ(get("big/archive.tgz", 0, whole.size()), whole);
  // Across the boundary of parts 1 and 2, and the tail of part 3.
  EXPECT_EQ(get("big/archive.tgz", 5 * kMiB - 100, 200), whole.substr(5 * kMiB - 100, 200));
  EXPECT_EQ(get("big/archive.tgz", whole.size() - 10, 100), whole.substr(whole.size() - 10));
}

TEST_F(S3ClientTest, MultipartAbortLeavesNothing) {
  auto upload = S3MultipartUpload::begin(s3(), bucket_, "aborted");
  ASSERT_TRUE(upload) << upload.error().message;
  ASSERT_TRUE(upload->upload_part(1, bytes(kMiB, 21)));
  auto aborted = upload->abort();
  ASSERT_TRUE(aborted) << aborted.error().message;
  EXPECT_EQ(head("aborted"), std::nullopt);
  auto late_part = upload->upload_part(2, "x");
  ASSERT_FALSE(late_part);
  EXPECT_NE(late_part.error().message.find("404 NoSuchUpload"), std::string::npos)
      << late_part.error().message;
  // radosgw 16 answers a completion after an abort with 500 InternalError ("completion already
  // in progress") rather than AWS's 404 NoSuchUpload: only the refusal is asserted.
  EXPECT_FALSE(upload->complete());
  EXPECT_EQ(head("aborted"), std::nullopt);
}

TEST_F(S3ClientTest, MultipartRefusesBadParts) {
  auto upload = S3MultipartUpload::begin(s3(), bucket_, "parts");
  ASSERT_TRUE(upload) << upload.error().message;
  auto empty = upload->complete();
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, EINVAL);
  EXPECT_FALSE(upload->upload_part(0, "x"));
  EXPECT_FALSE(upload->upload_part(10001, "x"));
  // A part below 5 MiB that is not the last one: the store refuses the join.
  ASSERT_TRUE(upload->upload_part(1, bytes(kMiB, 31)));
  ASSERT_TRUE(upload->upload_part(2, bytes(kMiB, 32)));
  auto completed = upload->complete();
  ASSERT_FALSE(completed);
  EXPECT_NE(completed.error().message.find("EntityTooSmall"), std::string::npos)
      << completed.error().message;
  ASSERT_TRUE(upload->abort());
}

TEST_F(S3ClientTest, BadCredentialsAreRefusedByName) {
  S3Credentials wrong_secret = credentials_;
  wrong_secret.secret_key = "not-the-secret";
  auto client = S3Client::create(wrong_secret);
  ASSERT_TRUE(client);
  auto put = client->put_object(bucket_, "k", "v");
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().code, EACCES);
  EXPECT_NE(put.error().message.find("S3 PUT " + bucket_ + "/k: 403 SignatureDoesNotMatch"),
            std::string::npos) << put.error().message;
  EXPECT_EQ(put.error().message.find("not-the-secret"), std::string::npos);

  S3Credentials wrong_key = credentials_;
  wrong_key.access_key = "NOSUCHKEY0000000000";
  client = S3Client::create(wrong_key);
  ASSERT_TRUE(client);
  auto listed = client->list_objects(bucket_, "", 1000);
  ASSERT_FALSE(listed);
  EXPECT_NE(listed.error().message.find("403 InvalidAccessKeyId"), std::string::npos)
      << listed.error().message;
  EXPECT_EQ(head("k"), std::nullopt);
}

// A TCP socket bound to 127.0.0.1 on a port the kernel picks, and that port.
std::pair<UniqueFd, uint16_t> bind_loopback() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{.sin_family = AF_INET, .sin_port = 0, .sin_addr = {htonl(INADDR_LOOPBACK)}};
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t size = sizeof(addr);
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &size);
  return {std::move(fd), ntohs(addr.sin_port)};
}

// A port on 127.0.0.1 that nothing listens on: bound by the kernel's choice, then closed.
uint16_t closed_port() { return bind_loopback().second; }

TEST(S3ClientUnreachableTest, ClosedPortFailsFastNamingTheEndpoint) {
  std::string endpoint = "http://127.0.0.1:" + std::to_string(closed_port());
  auto client = S3Client::create({.endpoint = endpoint, .region = "default",
                                  .access_key = "AK", .secret_key = "SK"});
  ASSERT_TRUE(client);
  auto start = std::chrono::steady_clock::now();
  auto put = client->put_object("bucket", "key", "body");
  auto head = client->head_object("bucket", "key");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ASSERT_FALSE(put);
  ASSERT_FALSE(head);
  EXPECT_EQ(put.error().code, ECONNREFUSED);
  EXPECT_NE(put.error().message.find("S3 PUT bucket/key: endpoint " + endpoint + " unreachable"),
            std::string::npos) << put.error().message;
  EXPECT_NE(head.error().message.find("unreachable"), std::string::npos) << head.error().message;
}

TEST(S3ClientUnreachableTest, SilentEndpointIsAbandoned) {
  // The kernel completes the handshake (the backlog), but nobody ever reads or answers.
  auto [listener, port] = bind_loopback();
  ASSERT_EQ(::listen(listener.get(), 8), 0);
  std::string endpoint = "http://127.0.0.1:" + std::to_string(port);
  auto client = S3Client::create({.endpoint = endpoint, .region = "default",
                                  .access_key = "AK", .secret_key = "SK"},
                                 {.low_speed_seconds = 1});
  ASSERT_TRUE(client);
  auto start = std::chrono::steady_clock::now();
  auto got = client->get_range("bucket", "key", 0, 10);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, ETIMEDOUT);
  EXPECT_NE(got.error().message.find("S3 GET bucket/key: endpoint " + endpoint + " not answering"),
            std::string::npos) << got.error().message;
}

}  // namespace
}  // namespace bkp::server
