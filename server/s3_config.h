// Where backupd's S3 store is: an s3://bucket/prefix location, and the endpoint and keys read
// from a credentials file kept apart from the main config (it holds a secret).
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "server/s3_client.h"

namespace bkp::server {

struct S3Location {
  std::string bucket;
  std::string prefix;  // "" or ending in '/' ("snapshots/web1/"): an object's key is prefix + name
};

// "s3://bucket" or "s3://bucket/some/prefix[/]". The bucket must follow S3's naming rules
// (3..63 of a-z 0-9 . -, starting and ending with a letter or digit); the prefix must have no
// empty segment ("a//b") and no '?' or '#'. Errors (EINVAL) quote the URL and say what is wrong.
Result<S3Location> parse_s3_url(std::string_view url);

// Reads a TOML file with the string keys endpoint ("http[s]://host[:port]"), access_key,
// secret_key and region, all required, no others. The file must be a regular file owned by the
// running user with no permission bits for group or others (0600 or stricter): otherwise it is
// refused (EACCES) with a message naming the file, its mode and its owner. No error message
// contains the secret.
Result<S3Credentials> load_s3_credentials(const std::string& path);

}  // namespace bkp::server
