// test_s3_credentials (see s3_env.h).
#include "tests/s3/s3_env.h"

#include <cstdlib>

#include "tests/testutil/files.h"

namespace bkp::server {

std::optional<S3Credentials> test_s3_credentials(std::string* why) {
  const char* env = std::getenv("BKP_TEST_S3_ENV");
  if (env == nullptr || *env == '\0') {
    *why = "BKP_TEST_S3_ENV is not set: run through ctest (ctest -L s3), which starts a one-node "
           "Ceph, or start one with tests/scale/ceph.sh start DIR and set BKP_TEST_S3_ENV=DIR/env";
    return std::nullopt;
  }
  return s3_credentials_in(env, why);
}

std::optional<S3Credentials> s3_credentials_in(const std::string& env_file, std::string* why) {
  auto values = testutil::read_env_file(env_file);
  if (!values || !values->contains("S3_ENDPOINT")) {
    *why = "no S3_ENDPOINT in " + env_file;
    return std::nullopt;
  }
  return S3Credentials{.endpoint = (*values)["S3_ENDPOINT"],
                       .region = (*values)["S3_REGION"],
                       .access_key = (*values)["S3_ACCESS_KEY"],
                       .secret_key = (*values)["S3_SECRET_KEY"]};
}

std::string s3_credentials_toml(const S3Credentials& c) {
  return "endpoint = \"" + c.endpoint + "\"\nregion = \"" + c.region + "\"\naccess_key = \"" +
         c.access_key + "\"\nsecret_key = \"" + c.secret_key + "\"\n";
}

}  // namespace bkp::server
