// The radosgw the S3 tests use: tests/scale/ceph.sh writes its endpoint and keys to an env file,
// which a CTest fixture starts and names in $BKP_TEST_S3_ENV.
#pragma once

#include <optional>
#include <string>

#include "server/s3_client.h"

namespace bkp::server {

// The store's credentials; nullopt, with *why saying how to run the tests, when
// $BKP_TEST_S3_ENV is unset or empty (the binary run by hand), or names a file without them.
std::optional<S3Credentials> test_s3_credentials(std::string* why);
// The credentials in an env file ceph.sh wrote; nullopt (why set) if it holds none.
std::optional<S3Credentials> s3_credentials_in(const std::string& env_file, std::string* why);
// The credentials as backupd's snapshot_store_credentials file holds them (TOML).
std::string s3_credentials_toml(const S3Credentials& c);

}  // namespace bkp::server
