// S3Client: the few S3 calls backupd's snapshot store needs, over libcurl with SigV4 signing.
//
// Path-style URLs only (endpoint/bucket/key), so any S3 implementation works without wildcard
// DNS (radosgw, MinIO, AWS with a regional endpoint). Keys are sent URL-encoded with '/' kept.
//
// Errors: every call returns Result. An HTTP error names the method, bucket/key, the status and
// S3's <Code> and <Message> ("S3 PUT b/k: 403 SignatureDoesNotMatch: ..."), with code EACCES for
// 401/403, ENOENT for 404, ERANGE for 416, EIO otherwise. A store that cannot be reached is named
// as such ("... endpoint http://... unreachable: ...", ECONNREFUSED/EHOSTUNREACH/ETIMEDOUT), one
// that accepts the connection but stops answering as "not answering" (ETIMEDOUT). No call hangs:
// S3Timeouts bounds connecting, and abandons a transfer that stalls.
//
// Thread-safety: an S3Client owns one CURL handle (and its kept-alive connection) and must be
// used by one thread at a time; give each thread its own client (handles are never shared).
// Each request is logged at debug level (method, bucket/key, status, bytes, time); the secret
// key is never logged or put into an error message.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace bkp::server {

// Where the store is and who we are to it (s3_config.h reads it from a file).
struct S3Credentials {
  std::string endpoint;  // "http://127.0.0.1:7480", no trailing slash needed
  std::string region;    // radosgw: the zonegroup's name, "default" unless configured
  std::string access_key;
  std::string secret_key;
};

// One entry of a listing.
struct S3Object {
  std::string key;
  uint64_t size = 0;
};

// A multipart upload begun and neither completed nor aborted.
struct S3Upload {
  std::string key;
  std::string upload_id;
};

// No overall deadline (a 5 GiB part may take minutes), but a stalled transfer is abandoned.
struct S3Timeouts {
  long connect_seconds = 10;
  // A request moving fewer than low_speed_bytes per second for low_speed_seconds fails.
  long low_speed_bytes = 1024;
  long low_speed_seconds = 30;
};

class S3Client {
 public:
  // Fails only if libcurl cannot make a handle (out of memory).
  static Result<S3Client> create(S3Credentials credentials, S3Timeouts timeouts = {});
  S3Client(S3Client&&) noexcept;
  S3Client& operator=(S3Client&&) noexcept;
  ~S3Client();

  // Succeeds when the bucket exists afterwards and belongs to us (whether or not it was new).
  Result<void> create_bucket(std::string_view bucket);
  // Stores body as the whole object, replacing any previous one.
  Result<void> put_object(std::string_view bucket, std::string_view key, std::string_view body);
  // The object's size, or nullopt when there is no such object (not an error).
  Result<std::optional<uint64_t>> head_object(std::string_view bucket, std::string_view key);
  // Bytes [offset, offset + length) of the object, shorter when the object ends first; length 0
  // gives "" without asking the store. An offset at or past the end is an ERANGE error.
  Result<std::string> get_range(std::string_view bucket, std::string_view key, uint64_t offset,
                                uint64_t length);
  // Every object whose key starts with prefix, in key order; asks for page_size keys per request
  // (S3 caps it at 1000) and follows continuation tokens until the listing ends.
  Result<std::vector<S3Object>> list_objects(std::string_view bucket, std::string_view prefix,
                                             int page_size = 1000);
  // Succeeds also when there is no such object (S3 semantics).
  Result<void> delete_object(std::string_view bucket, std::string_view key);
  // The uploads still open (begun, neither completed nor aborted) of keys starting with prefix,
  // following the listing's markers to its end.
  Result<std::vector<S3Upload>> list_uploads(std::string_view bucket, std::string_view prefix);
  // Drops an open upload's parts, whoever began it (a process that crashed, say).
  Result<void> abort_upload(std::string_view bucket, std::string_view key,
                            std::string_view upload_id);

 private:
  friend class S3MultipartUpload;

  struct Request {
    const char* method = "GET";
    std::string_view bucket;
    std::string_view key;  // "" for a bucket request
    // Sent sorted by name, each as name=value ("uploads=" for a bare flag), as SigV4 needs.
    std::vector<std::pair<std::string, std::string>> query;
    std::string_view body;
    std::vector<std::string> headers;  // extra "Name: value" lines
  };
  struct Response {
    long status = 0;
    std::string body;
    std::map<std::string, std::string> headers;  // names lowercased
    uint64_t content_length = 0;                // HEAD: the object's size
  };
  struct CurlDeleter {
    void operator()(void* handle) const;
  };

  S3Client(S3Credentials credentials, S3Timeouts timeouts, void* curl);
  // Sends the request and reads the whole reply; any status is returned, only transport failures
  // are errors.
  Result<Response> perform(const Request& request);
  // The error for a request curl could not complete (curl_code: a CURLcode; detail: its error
  // buffer, possibly empty).
  Error transport_error(const Request& request, int curl_code, const char* detail) const;
  // The error for a reply with status >= 300.
  Error http_error(const Request& request, const Response& response) const;
  std::string url(const Request& request) const;

  S3Credentials credentials_;
  S3Timeouts timeouts_;
  std::string sigv4_;  // "aws:amz:REGION:s3"
  std::unique_ptr<void, CurlDeleter> curl_;
};

// One multipart upload: begin, upload parts (any order, each but the last at least 5 MiB), then
// complete (the object appears whole) or abort (the parts are dropped). Until complete the object
// does not exist for head/get/list. The upload borrows the client: it must outlive the upload and
// not be moved meanwhile, and the same one-thread rule applies. Destroying an upload neither
// completed nor aborted sends nothing; its parts stay in the store until aborted
// (S3Client::list_uploads and abort_upload) or expired by a bucket lifecycle rule.
class S3MultipartUpload {
 public:
  static Result<S3MultipartUpload> begin(S3Client& client, std::string bucket, std::string key);

  // part_number is 1..10000; uploading a number again replaces that part.
  Result<void> upload_part(int part_number, std::string_view bytes);
  // Joins the uploaded parts in part-number order. Fails (EINVAL) when no part was uploaded.
  Result<void> complete();
  Result<void> abort();

  const std::string& upload_id() const { return upload_id_; }

 private:
  S3MultipartUpload(S3Client& client, std::string bucket, std::string key, std::string upload_id)
      : client_(&client),
        bucket_(std::move(bucket)),
        key_(std::move(key)),
        upload_id_(std::move(upload_id)) {}

  S3Client* client_;  // not owned
  std::string bucket_;
  std::string key_;
  std::string upload_id_;
  std::map<int, std::string> etags_;  // part number -> ETag as the store returned it
};

}  // namespace bkp::server
