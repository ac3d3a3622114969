// The S3 client: one function (perform) builds the URL, signs and sends a request through
// libcurl, and reads the reply; the operations only choose method, query and body, and pick the
// few XML elements they need out of the reply.
//
// Signing is libcurl's (CURLOPT_AWS_SIGV4, 7.75+), with three quirks of curl 7.88 worked around
// here rather than by hand-rolling SigV4:
//   - curl signs the query string as it is given, but SigV4 signs it sorted by name: we send it
//     sorted, every parameter as name=value ("?uploads=" rather than "?uploads", which curl would
//     sign differently from what radosgw computes);
//   - curl does not send x-amz-content-sha256, which radosgw (like AWS) requires: we hash the
//     payload (OpenSSL) and send the header, which curl then also signs;
//   - the body goes out as POSTFIELDS under a custom method, so the form Content-Type curl would
//     add is replaced. An empty header line ("Expect:", curl's way to drop a header) is still
//     listed in SignedHeaders by 7.88 though not sent, and radosgw then computes another
//     signature: so curl's "Expect: 100-continue" on large bodies stays (radosgw answers at once).
// The XML is S3's fixed, flat shape; a few string searches read it, no XML library is needed.
#include "server/s3_client.h"

#include <curl/curl.h>
#include <openssl/evp.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <mutex>

#include "common/log.h"

namespace bkp::server {
namespace {

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr) != 1) {
    std::abort();  // internal error: SHA-256 is always available in OpenSSL 3
  }
  std::string hex;
  hex.reserve(size * 2);
  for (unsigned int i = 0; i < size; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

// S3's URI encoding: everything but the unreserved characters as %XX (upper case); '/' kept in
// object keys, encoded in query values.
enum class Slash { kKeep, kEncode };
std::string uri_encode(std::string_view s, Slash slash) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '_' || c == '.' || c == '~';
    if (unreserved || (c == '/' && slash == Slash::kKeep)) {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

std::string xml_unescape(std::string_view s) {
  static const std::pair<std::string_view, char> kEntities[] = {
      {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    bool replaced = false;
    if (s[i] == '&') {
      for (const auto& [entity, c] : kEntities) {
        if (s.substr(i, entity.size()) == entity) {
          out += c;
          i += entity.size();
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out += s[i++];
  }
  return out;
}

// The raw text of each <tag>...</tag> in xml, in order.
std::vector<std::string_view> xml_elements(std::string_view xml, std::string_view tag) {
  std::vector<std::string_view> found;
  std::string open = fmt::format("<{}>", tag);
  std::string close = fmt::format("</{}>", tag);
  for (size_t pos = xml.find(open); pos != std::string_view::npos; pos = xml.find(open, pos)) {
    size_t start = pos + open.size();
    size_t end = xml.find(close, start);
    if (end == std::string_view::npos) break;
    found.push_back(xml.substr(start, end - start));
    pos = end + close.size();
  }
  return found;
}

// The unescaped text of the first <tag> in xml, or "" when there is none.
std::string xml_value(std::string_view xml, std::string_view tag) {
  auto elements = xml_elements(xml, tag);
  return elements.empty() ? std::string() : xml_unescape(elements.front());
}

size_t append_body(char* data, size_t size, size_t count, void* response) {
  static_cast<std::string*>(response)->append(data, size * count);
  return size * count;
}

// Keeps "Name: value" header lines, name lowercased; the status line and blank line are skipped.
size_t keep_header(char* data, size_t size, size_t count, void* headers) {
  std::string_view line(data, size * count);
  size_t colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    std::string_view value = line.substr(colon + 1);
    constexpr std::string_view kSpace = " \t\r\n";
    size_t first = value.find_first_not_of(kSpace);
    value = first == std::string_view::npos
                ? std::string_view()
                : value.substr(first, value.find_last_not_of(kSpace) - first + 1);
    (*static_cast<std::map<std::string, std::string>*>(headers))[name] = std::string(value);
  }
  return size * count;
}

int transport_errno(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_CONNECT: return ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST: return EHOSTUNREACH;
    case CURLE_OPERATION_TIMEDOUT: return ETIMEDOUT;
    default: return EIO;
  }
}

int status_errno(long status) {
  switch (status) {
    case 401:
    case 403: return EACCES;
    case 404: return ENOENT;
    case 416: return ERANGE;
    default: return EIO;
  }
}

std::string target(std::string_view bucket, std::string_view key) {
  return key.empty() ? std::string(bucket) : fmt::format("{}/{}", bucket, key);
}

}  // namespace

void S3Client::CurlDeleter::operator()(void* handle) const { curl_easy_cleanup(handle); }

S3Client::S3Client(S3Credentials credentials, S3Timeouts timeouts, void* curl)
    : credentials_(std::move(credentials)),
      timeouts_(timeouts),
      sigv4_(fmt::format("aws:amz:{}:s3", credentials_.region)),
      curl_(curl) {
  while (!credentials_.endpoint.empty() && credentials_.endpoint.back() == '/') {
    credentials_.endpoint.pop_back();
  }
}

S3Client::S3Client(S3Client&&) noexcept = default;
S3Client& S3Client::operator=(S3Client&&) noexcept = default;
S3Client::~S3Client() = default;

Result<S3Client> S3Client::create(S3Credentials credentials, S3Timeouts timeouts) {
  // curl_global_init is not thread-safe before 7.84; once, here, is enough for every client.
  static std::once_flag global_init;
  std::call_once(global_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return fail(ENOMEM, "S3 client: curl_easy_init failed");
  return S3Client(std::move(credentials), timeouts, curl);
}

std::string S3Client::url(const Request& request) const {
  std::string url =
      fmt::format("{}/{}", credentials_.endpoint, uri_encode(request.bucket, Slash::kEncode));
  if (!request.key.empty()) url += "/" + uri_encode(request.key, Slash::kKeep);
  auto query = request.query;
  std::sort(query.begin(), query.end());
  char separator = '?';
  for (const auto& [name, value] : query) {
    url += fmt::format("{}{}={}", separator, uri_encode(name, Slash::kEncode),
                       uri_encode(value, Slash::kEncode));
    separator = '&';
  }
  return url;
}

Result<S3Client::Response> S3Client::perform(const Request& request) {
  CURL* curl = curl_.get();
  curl_easy_reset(curl);  // keeps the connection cache: the next request reuses the connection
  std::string url = this->url(request);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, timeouts_.connect_seconds);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, timeouts_.low_speed_bytes);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, timeouts_.low_speed_seconds);
  curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, sigv4_.c_str());
  curl_easy_setopt(curl, CURLOPT_USERNAME, credentials_.access_key.c_str());
  curl_easy_setopt(curl, CURLOPT_PASSWORD, credentials_.secret_key.c_str());

  std::string_view method = request.method;
  if (method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method);
  }
  if (method == "PUT" || method == "POST") {
    // Never NULL (an empty string_view's data() may be): curl would then read the body from stdin.
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.empty() ? "" : request.body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.body.size()));
  }

  curl_slist* headers = nullptr;
  std::vector<std::string> lines = request.headers;
  lines.push_back("x-amz-content-sha256: " + sha256_hex(request.body));
  lines.push_back("Content-Type: application/octet-stream");
  for (const std::string& line : lines) headers = curl_slist_append(headers, line.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

  Response response;
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, keep_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &response.headers);
  char detail[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, detail);

  auto start = std::chrono::steady_clock::now();
  CURLcode rc = curl_easy_perform(curl);
  curl_slist_free_all(headers);
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  if (rc != CURLE_OK) return tl::unexpected(transport_error(request, rc, detail));
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  curl_off_t length = -1;
  curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  response.content_length = length > 0 ? static_cast<uint64_t>(length) : 0;
  log::debug("S3 {} {}: {} ({} bytes sent, {} received, {} ms)", request.method,
             target(request.bucket, request.key), response.status, request.body.size(),
             response.body.size(), elapsed.count());
  return response;
}

Error S3Client::transport_error(const Request& request, int curl_code, const char* detail) const {
  auto rc = static_cast<CURLcode>(curl_code);
  std::string what = fmt::format("S3 {} {}", request.method, target(request.bucket, request.key));
  std::string why = detail[0] != '\0' ? detail : curl_easy_strerror(rc);
  // A timeout before the connection was made is as much "unreachable" as a refusal.
  curl_off_t connected_after = 0;
  curl_easy_getinfo(curl_.get(), CURLINFO_CONNECT_TIME_T, &connected_after);
  if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
      (rc == CURLE_OPERATION_TIMEDOUT && connected_after == 0)) {
    return Error{transport_errno(rc), fmt::format("{}: endpoint {} unreachable: {}", what,
                                                  credentials_.endpoint, why)};
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    return Error{ETIMEDOUT, fmt::format("{}: endpoint {} not answering: {}", what,
                                        credentials_.endpoint, why)};
  }
  return Error{transport_errno(rc), fmt::format("{}: {}", what, why)};
}

Error S3Client::http_error(const Request& request, const Response& response) const {
  std::string code = xml_value(response.body, "Code");
  std::string message = xml_value(response.body, "Message");
  std::string text = fmt::format("S3 {} {}: {}", request.method,
                                 target(request.bucket, request.key), response.status);
  if (!code.empty()) text += " " + code;
  if (!message.empty()) text += ": " + message;
  return Error{status_errno(response.status), text};
}

Result<void> S3Client::create_bucket(std::string_view bucket) {
  Request request{.method = "PUT", .bucket = bucket};
  Response response = BKP_TRY(perform(request));
  if (response.status < 300) return {};
  if (response.status == 409 && xml_value(response.body, "Code") == "BucketAlreadyOwnedByYou") {
    return {};
  }
  return tl::unexpected(http_error(request, response));
}

Result<void> S3Client::put_object(std::string_view bucket, std::string_view key,
                                  std::string_view body) {
  Request request{.method = "PUT", .bucket = bucket, .key = key, .body = body};
  Response response = BKP_TRY(perform(request));
  if (response.status >= 300) return tl::unexpected(http_error(request, response));
  return {};
}

Result<std::optional<uint64_t>> S3Client::head_object(std::string_view bucket,
                                                      std::string_view key) {
  Request request{.method = "HEAD", .bucket = bucket, .key = key};
  Response response = BKP_TRY(perform(request));
  if (response.status == 404) return std::nullopt;
  if (response.status >= 300) return tl::unexpected(http_error(request, response));
  return response.content_length;
}

Result<std::string> S3Client::get_range(std::string_view bucket, std::string_view key,
                                        uint64_t offset, uint64_t length) {
  if (length == 0) return std::string();
  Request request{.method = "GET", .bucket = bucket, .key = key};
  uint64_t last = length - 1 > UINT64_MAX - offset ? UINT64_MAX : offset + length - 1;
  request.headers.push_back(fmt::format("Range: bytes={}-{}", offset, last));
  Response response = BKP_TRY(perform(request));
  if (response.status >= 300) return tl::unexpected(http_error(request, response));
  if (response.status != 206 && offset != 0) {
    return fail(EPROTO, fmt::format("S3 GET {}: the store ignored the Range header",
                                    target(bucket, key)));
  }
  if (response.body.size() > length) response.body.resize(length);
  return std::move(response.body);
}

Result<std::vector<S3Object>> S3Client::list_objects(std::string_view bucket,
                                                     std::string_view prefix, int page_size) {
  std::vector<S3Object> objects;
  std::string token;
  while (true) {
    Request request{.method = "GET", .bucket = bucket};
    request.query = {{"list-type", "2"},
                     {"max-keys", std::to_string(page_size)},
                     {"prefix", std::string(prefix)}};
    if (!token.empty()) request.query.emplace_back("continuation-token", token);
    Response response = BKP_TRY(perform(request));
    if (response.status >= 300) return tl::unexpected(http_error(request, response));
    for (std::string_view contents : xml_elements(response.body, "Contents")) {
      S3Object object{.key = xml_value(contents, "Key")};
      object.size = std::strtoull(xml_value(contents, "Size").c_str(), nullptr, 10);
      objects.push_back(std::move(object));
    }
    if (xml_value(response.body, "IsTruncated") != "true") return objects;
    token = xml_value(response.body, "NextContinuationToken");
    if (token.empty()) {
      return fail(EPROTO, fmt::format("S3 list {}/{}: a truncated listing without a "
                                      "continuation token", bucket, prefix));
    }
  }
}

Result<void> S3Client::delete_object(std::string_view bucket, std::string_view key) {
  Request request{.method = "DELETE", .bucket = bucket, .key = key};
  Response response = BKP_TRY(perform(request));
  if (response.status >= 300 && response.status != 404) {
    return tl::unexpected(http_error(request, response));
  }
  return {};
}

Result<std::vector<S3Upload>> S3Client::list_uploads(std::string_view bucket,
                                                     std::string_view prefix) {
  std::vector<S3Upload> uploads;
  std::string key_marker, id_marker;
  while (true) {
    Request request{.method = "GET", .bucket = bucket};
    request.query = {{"prefix", std::string(prefix)}, {"uploads", ""}};
    if (!key_marker.empty()) {
      request.query.emplace_back("key-marker", key_marker);
      request.query.emplace_back("upload-id-marker", id_marker);
    }
    Response response = BKP_TRY(perform(request));
    if (response.status >= 300) return tl::unexpected(http_error(request, response));
    for (std::string_view upload : xml_elements(response.body, "Upload")) {
      uploads.push_back(S3Upload{xml_value(upload, "Key"), xml_value(upload, "UploadId")});
    }
    if (xml_value(response.body, "IsTruncated") != "true") return uploads;
    key_marker = xml_value(response.body, "NextKeyMarker");
    id_marker = xml_value(response.body, "NextUploadIdMarker");
    if (key_marker.empty()) {
      return fail(EPROTO, fmt::format("S3 list uploads {}/{}: a truncated listing without a "
                                      "next marker", bucket, prefix));
    }
  }
}

Result<void> S3Client::abort_upload(std::string_view bucket, std::string_view key,
                                    std::string_view upload_id) {
  Request request{.method = "DELETE", .bucket = bucket, .key = key};
  request.query = {{"uploadId", std::string(upload_id)}};
  Response response = BKP_TRY(perform(request));
  if (response.status >= 300) return tl::unexpected(http_error(request, response));
  return {};
}

Result<S3MultipartUpload> S3MultipartUpload::begin(S3Client& client, std::string bucket,
                                                   std::string key) {
  S3Client::Request request{.method = "POST", .bucket = bucket, .key = key};
  request.query = {{"uploads", ""}};
  S3Client::Response response = BKP_TRY(client.perform(request));
  if (response.status >= 300) return tl::unexpected(client.http_error(request, response));
  std::string upload_id = xml_value(response.body, "UploadId");
  if (upload_id.empty()) {
    return fail(EPROTO,
                fmt::format("S3 POST {}/{}?uploads: no UploadId in the reply", bucket, key));
  }
  return S3MultipartUpload(client, std::move(bucket), std::move(key), std::move(upload_id));
}

Result<void> S3MultipartUpload::upload_part(int part_number, std::string_view bytes) {
  if (part_number < 1 || part_number > 10000) {
    return fail(EINVAL, fmt::format("S3 upload part {}/{}: part number {} is not in 1..10000",
                                    bucket_, key_, part_number));
  }
  S3Client::Request request{.method = "PUT", .bucket = bucket_, .key = key_, .body = bytes};
  request.query = {{"partNumber", std::to_string(part_number)}, {"uploadId", upload_id_}};
  S3Client::Response response = BKP_TRY(client_->perform(request));
  if (response.status >= 300) return tl::unexpected(client_->http_error(request, response));
  auto etag = response.headers.find("etag");
  if (etag == response.headers.end() || etag->second.empty()) {
    return fail(EPROTO, fmt::format("S3 PUT {}/{} part {}: no ETag in the reply", bucket_, key_,
                                    part_number));
  }
  etags_[part_number] = etag->second;
  return {};
}

Result<void> S3MultipartUpload::complete() {
  if (etags_.empty()) {
    return fail(EINVAL, fmt::format("S3 complete {}/{}: no part was uploaded", bucket_, key_));
  }
  std::string xml = "<CompleteMultipartUpload>";
  for (const auto& [number, etag] : etags_) {
    xml += fmt::format("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>", number, etag);
  }
  xml += "</CompleteMultipartUpload>";
  S3Client::Request request{.method = "POST", .bucket = bucket_, .key = key_, .body = xml};
  request.query = {{"uploadId", upload_id_}};
  S3Client::Response response = BKP_TRY(client_->perform(request));
  // S3 may answer 200 and still report a failure in the body, once the parts have been joined.
  if (response.status >= 300 || response.body.find("<Error>") != std::string::npos) {
    return tl::unexpected(client_->http_error(request, response));
  }
  return {};
}

Result<void> S3MultipartUpload::abort() { return client_->abort_upload(bucket_, key_, upload_id_); }

}  // namespace bkp::server
