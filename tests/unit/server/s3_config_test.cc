// s3:// locations (bucket and prefix, every malformed shape refused naming the URL) and the S3
// credentials file: read when private to its owner, refused when others may read it or someone
// else owns it, and never quoting the secret back.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <string>

#include "server/s3_config.h"
#include "tests/testutil/files.h"
#include "tests/testutil/temp_dir.h"

namespace bkp::server {
namespace {

TEST(S3UrlTest, BucketAndPrefix) {
  auto bare = parse_s3_url("s3://bkp-snapshots");
  ASSERT_TRUE(bare) << bare.error().message;
  EXPECT_EQ(bare->bucket, "bkp-snapshots");
  EXPECT_EQ(bare->prefix, "");
  EXPECT_EQ(parse_s3_url("s3://bkp-snapshots/")->prefix, "");
  for (const char* url : {"s3://my.bucket-1/web1/daily", "s3://my.bucket-1/web1/daily/"}) {
    auto location = parse_s3_url(url);
    ASSERT_TRUE(location) << location.error().message;
    EXPECT_EQ(location->bucket, "my.bucket-1");
    EXPECT_EQ(location->prefix, "web1/daily/");
  }
}

TEST(S3UrlTest, MalformedUrlsAreRefusedWithTheReason) {
  const std::pair<const char*, const char*> cases[] = {
      {"http://bucket/x", "must start with s3://"},
      {"bucket/x", "must start with s3://"},
      {"s3://", "no bucket name"},
      {"s3:///prefix", "no bucket name"},
      {"s3://ab", "not a valid bucket name"},
      {"s3://Upper-Case", "not a valid bucket name"},
      {"s3://-dash-first", "not a valid bucket name"},
      {"s3://under_score", "not a valid bucket name"},
      {"s3://bucket//x", "empty path segment"},
      {"s3://bucket/a//b", "empty path segment"},
      {"s3://bucket/a?b", "'?' or '#'"},
  };
  for (const auto& [url, why] : cases) {
    auto location = parse_s3_url(url);
    ASSERT_FALSE(location) << url;
    EXPECT_EQ(location.error().code, EINVAL);
    EXPECT_NE(location.error().message.find(std::string("'") + url + "'"), std::string::npos)
        << location.error().message;
    EXPECT_NE(location.error().message.find(why), std::string::npos) << location.error().message;
  }
}

class S3CredentialsTest : public ::testing::Test {
 protected:
  std::string write(const std::string& text, int mode) {
    std::string path = tmp_.sub("s3.toml");
    testutil::write_file(path, text, mode);
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);  // exact, whatever the umask
    return path;
  }
  static constexpr const char* kGood =
      "endpoint = \"http://127.0.0.1:7480\"\n"
      "access_key = \"AKIDEXAMPLE\"\n"
      "secret_key = \"wJalrXUtnFEMI/K7MDENG\"\n"
      "region = \"default\"\n";
  testutil::TempDir tmp_{"bkp-s3-config"};
};

TEST_F(S3CredentialsTest, PrivateFileIsRead) {
  for (int mode : {0600, 0400}) {
    auto credentials = load_s3_credentials(write(kGood, mode));
    ASSERT_TRUE(credentials) << credentials.error().message;
    EXPECT_EQ(credentials->endpoint, "http://127.0.0.1:7480");
    EXPECT_EQ(credentials->access_key, "AKIDEXAMPLE");
    EXPECT_EQ(credentials->secret_key, "wJalrXUtnFEMI/K7MDENG");
    EXPECT_EQ(credentials->region, "default");
  }
}

TEST_F(S3CredentialsTest, FileOthersCanReadIsRefused) {
  for (int mode : {0644, 0640, 0604}) {
    std::string path = write(kGood, mode);
    auto credentials = load_s3_credentials(path);
    ASSERT_FALSE(credentials);
    EXPECT_EQ(credentials.error().code, EACCES);
    EXPECT_NE(credentials.error().message.find(path), std::string::npos);
    EXPECT_NE(credentials.error().message.find(fmt::format("mode {:04o}", mode)),
              std::string::npos) << credentials.error().message;
    EXPECT_EQ(credentials.error().message.find("wJalr"), std::string::npos);
  }
}

TEST_F(S3CredentialsTest, FileOwnedBySomeoneElseIsRefused) {
  std::string path = write(kGood, 0600);
  if (::geteuid() != 0) GTEST_SKIP() << "giving the file to another user needs root";
  ASSERT_EQ(::chown(path.c_str(), 1, 1), 0);
  auto credentials = load_s3_credentials(path);
  ASSERT_FALSE(credentials);
  EXPECT_NE(credentials.error().message.find("owned by uid 1, not by the running user"),
            std::string::npos) << credentials.error().message;
}

TEST_F(S3CredentialsTest, BadContentIsRefusedNamingTheKey) {
  const std::pair<std::string, std::string> cases[] = {
      {"endpoint = \"http://h\"\naccess_key = \"a\"\nregion = \"r\"\n",
       "key 'secret_key' is missing"},
      {std::string(kGood) + "bucket = \"b\"\n", "unknown key 'bucket'"},
      {"endpoint = \"h:1\"\naccess_key = \"a\"\nsecret_key = \"wJalr\"\nregion = \"r\"\n",
       "key 'endpoint' must start with http://"},
      {"endpoint = \"http://h\"\naccess_key = 7\nsecret_key = \"wJalr\"\nregion = \"r\"\n",
       "key 'access_key' must be a non-empty string"},
      {"endpoint = \"http://h\"\naccess_key = \"a\"\nsecret_key = \"wJalr\n", "s3.toml:3:"},
  };
  for (const auto& [text, why] : cases) {
    auto credentials = load_s3_credentials(write(text, 0600));
    ASSERT_FALSE(credentials) << text;
    EXPECT_NE(credentials.error().message.find(why), std::string::npos)
        << credentials.error().message;
    EXPECT_EQ(credentials.error().message.find("wJalr"), std::string::npos)
        << credentials.error().message;
  }
}

TEST_F(S3CredentialsTest, MissingFileNamesIt) {
  auto credentials = load_s3_credentials(tmp_.sub("absent.toml"));
  ASSERT_FALSE(credentials);
  EXPECT_EQ(credentials.error().code, ENOENT);
  EXPECT_NE(credentials.error().message.find("absent.toml"), std::string::npos);
}

}  // namespace
}  // namespace bkp::server
