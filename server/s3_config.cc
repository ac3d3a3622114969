// s3:// locations and the S3 credentials file. The credentials file is read through one open
// descriptor (fstat then read, no window for a swap between the check and the read) and refused
// unless only its owner, the running user, can read it: a secret readable by others is a
// configuration error to fix, not something to warn about and use.
#include "server/s3_config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <toml++/toml.h>

#include "common/unique_fd.h"

namespace bkp::server {
namespace {

bool valid_bucket(std::string_view bucket) {
  if (bucket.size() < 3 || bucket.size() > 63) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(bucket.front()) || !alnum(bucket.back())) return false;
  return std::all_of(bucket.begin(), bucket.end(),
                     [&](char c) { return alnum(c) || c == '.' || c == '-'; });
}

Result<std::string> read_private_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return fail_errno(fmt::format("S3 credentials {}", path));
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return fail_errno(fmt::format("S3 credentials {}", path));
  if (!S_ISREG(st.st_mode)) {
    return fail(EINVAL, fmt::format("S3 credentials {}: not a regular file", path));
  }
  if ((st.st_mode & 077) != 0) {
    return fail(EACCES, fmt::format("S3 credentials {}: mode {:04o} lets other users read the "
                                    "secret; it must be 0600 or stricter (chmod 600 {})",
                                    path, st.st_mode & 07777, path));
  }
  if (st.st_uid != ::geteuid()) {
    return fail(EACCES, fmt::format("S3 credentials {}: owned by uid {}, not by the running user "
                                    "(uid {})", path, st.st_uid, ::geteuid()));
  }
  std::string text;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno(fmt::format("S3 credentials {}: read", path));
    if (n == 0) return text;
    text.append(buf, static_cast<size_t>(n));
  }
}

Result<std::string> required_string(const toml::table& table, const std::string& path,
                                    const char* key) {
  const toml::node* node = table.get(key);
  if (node == nullptr) {
    return fail(EINVAL, fmt::format("S3 credentials {}: key '{}' is missing", path, key));
  }
  if (node->type() != toml::node_type::string || node->value<std::string>()->empty()) {
    return fail(EINVAL, fmt::format("S3 credentials {}: key '{}' must be a non-empty string",
                                    path, key));
  }
  return *node->value<std::string>();
}

}  // namespace

Result<S3Location> parse_s3_url(std::string_view url) {
  auto malformed = [&](std::string_view why) {
    return fail(EINVAL, fmt::format("S3 location '{}': {}", url, why));
  };
  constexpr std::string_view kScheme = "s3://";
  if (!url.starts_with(kScheme)) return malformed("must start with s3://");
  std::string_view rest = url.substr(kScheme.size());
  size_t slash = rest.find('/');
  S3Location location{.bucket = std::string(rest.substr(0, slash))};
  if (location.bucket.empty()) return malformed("no bucket name after s3://");
  if (!valid_bucket(location.bucket)) {
    return malformed(fmt::format("'{}' is not a valid bucket name (3 to 63 of a-z, 0-9, '.' and "
                                 "'-', starting and ending with a letter or digit)",
                                 location.bucket));
  }
  if (slash == std::string_view::npos) return location;
  std::string_view prefix = rest.substr(slash + 1);
  if (prefix.find_first_of("?#") != std::string_view::npos) {
    return malformed("a prefix cannot hold '?' or '#'");
  }
  if (prefix.ends_with('/')) prefix.remove_suffix(1);
  if (prefix.empty()) return location;
  if (prefix.front() == '/' || prefix.find("//") != std::string_view::npos) {
    return malformed("the prefix has an empty path segment ('//')");
  }
  location.prefix = fmt::format("{}/", prefix);
  return location;
}

Result<S3Credentials> load_s3_credentials(const std::string& path) {
  std::string text = BKP_TRY(read_private_file(path));
  toml::table table;
  try {
    table = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return fail(EINVAL, fmt::format("S3 credentials {}:{}:{}: {}", path, where.line,
                                    where.column, e.description()));
  }
  static const std::set<std::string, std::less<>> kKnownKeys = {"endpoint", "access_key",
                                                                "secret_key", "region"};
  for (const auto& [key, node] : table) {
    if (!kKnownKeys.contains(key.str())) {
      return fail(EINVAL, fmt::format("S3 credentials {}: unknown key '{}'", path, key.str()));
    }
  }
  S3Credentials credentials;
  credentials.endpoint = BKP_TRY(required_string(table, path, "endpoint"));
  if (!credentials.endpoint.starts_with("http://") &&
      !credentials.endpoint.starts_with("https://")) {
    return fail(EINVAL, fmt::format("S3 credentials {}: key 'endpoint' must start with http:// "
                                    "or https://, not '{}'", path, credentials.endpoint));
  }
  credentials.access_key = BKP_TRY(required_string(table, path, "access_key"));
  credentials.secret_key = BKP_TRY(required_string(table, path, "secret_key"));
  credentials.region = BKP_TRY(required_string(table, path, "region"));
  return credentials;
}

}  // namespace bkp::server
