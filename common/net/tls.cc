// TLS sessions on byte-queue BIOs (see tls.h).
#include "common/net/tls.h"

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <climits>
#include <cstring>

namespace bkp::net {
namespace {

// Any certificate passes the X.509 check (they are self-signed by design); TLS 1.3 still makes
// the peer prove it holds the certificate's key, and the caller checks the fingerprint.
int accept_any_certificate(int, X509_STORE_CTX*) { return 1; }

}  // namespace

// Bytes appended at the end and consumed from the front. Storage only grows, uninitialised;
// the unread part moves to the front only when an append would not fit behind it.
struct TlsSession::Queue {
  std::unique_ptr<uint8_t[]> data;
  size_t capacity = 0, begin = 0, end = 0;

  std::span<const uint8_t> readable() const { return {data.get() + begin, end - begin}; }
  void consume(size_t n) {
    begin += std::min(n, end - begin);
    if (begin == end) begin = end = 0;
  }
  void append(const uint8_t* bytes, size_t n) {
    if (end + n > capacity) {
      size_t live = end - begin;
      if (live + n <= capacity) {
        std::memmove(data.get(), data.get() + begin, live);
      } else {
        size_t grown = std::max({capacity * 2, live + n, size_t{64} << 10});
        auto bigger = std::make_unique_for_overwrite<uint8_t[]>(grown);
        if (live > 0) std::memcpy(bigger.get(), data.get() + begin, live);
        data = std::move(bigger);
        capacity = grown;
      }
      begin = 0;
      end = live;
    }
    if (n > 0) std::memcpy(data.get() + end, bytes, n);
    end += n;
  }

  // The BIO of a queue: writes append, reads consume, an empty queue is "retry later" (the
  // record layer's want-read), never the end of the stream.
  static int write(BIO* b, const char* bytes, size_t n, size_t* written) {
    BIO_clear_retry_flags(b);
    static_cast<Queue*>(BIO_get_data(b))->append(reinterpret_cast<const uint8_t*>(bytes), n);
    *written = n;
    return 1;
  }
  static int read(BIO* b, char* out, size_t n, size_t* got) {
    BIO_clear_retry_flags(b);
    auto* q = static_cast<Queue*>(BIO_get_data(b));
    size_t k = std::min(n, q->end - q->begin);
    if (k == 0) {
      BIO_set_retry_read(b);
      *got = 0;
      return 0;
    }
    std::memcpy(out, q->data.get() + q->begin, k);
    q->consume(k);
    *got = k;
    return 1;
  }
  static long ctrl(BIO* b, int cmd, long, void*) {
    switch (cmd) {
      case BIO_CTRL_FLUSH: return 1;
      case BIO_CTRL_PENDING: {
        auto* q = static_cast<Queue*>(BIO_get_data(b));
        return static_cast<long>(q->end - q->begin);
      }
      default: return 0;
    }
  }
  static int create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
  }
  static const BIO_METHOD* method() {
    static BIO_METHOD* m = [] {
      BIO_METHOD* made = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "bkp queue");
      if (made != nullptr) {
        BIO_meth_set_write_ex(made, write);
        BIO_meth_set_read_ex(made, read);
        BIO_meth_set_ctrl(made, ctrl);
        BIO_meth_set_create(made, create);
      }
      return made;
    }();
    return m;
  }
  BIO* bio() {
    const BIO_METHOD* m = method();
    BIO* b = m != nullptr ? BIO_new(m) : nullptr;
    if (b != nullptr) BIO_set_data(b, this);
    return b;
  }
};

Result<std::shared_ptr<TlsConfig>> TlsConfig::make(const Identity& identity) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (!ctx) return fail(EIO, "TLS setup: " + openssl_reason());
  std::shared_ptr<TlsConfig> config(new TlsConfig(ctx, identity.id));
  bool ok = SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) == 1 &&
            SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
                                          "TLS_AES_256_GCM_SHA384") == 1 &&
            SSL_CTX_use_certificate(ctx, identity.cert.get()) == 1 &&
            SSL_CTX_use_PrivateKey(ctx, identity.key.get()) == 1 &&
            SSL_CTX_set_num_tickets(ctx, 0) == 1;
  if (!ok) return fail(EIO, "TLS setup: " + openssl_reason());
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                     accept_any_certificate);
  return config;
}

Result<std::shared_ptr<TlsConfig>> TlsConfig::load(const std::string& path,
                                                   const std::string& name) {
  Identity identity = BKP_TRY(load_or_create_identity(path, name));
  return make(identity);
}

bool Trust::allows(const std::string& id) const {
  return std::find(peers.begin(), peers.end(), id) != peers.end();
}

TlsConfig::~TlsConfig() { SSL_CTX_free(ctx_); }

Result<std::unique_ptr<TlsSession>> TlsSession::make(const TlsConfig& config, TlsSide side) {
  std::unique_ptr<TlsSession> s(new TlsSession());
  s->in_ = std::make_unique<Queue>();
  s->out_ = std::make_unique<Queue>();
  s->ssl_ = SSL_new(config.ctx());
  BIO* in = s->in_->bio();
  BIO* out = s->out_->bio();
  if (!s->ssl_ || !in || !out) {
    BIO_free(in);
    BIO_free(out);
    return fail(ENOMEM, "TLS session: " + openssl_reason());
  }
  SSL_set_bio(s->ssl_, in, out);
  if (side == TlsSide::kServer) {
    SSL_set_accept_state(s->ssl_);
  } else {
    SSL_set_connect_state(s->ssl_);
  }
  return s;
}

TlsSession::~TlsSession() { SSL_free(ssl_); }

Result<bool> TlsSession::handshake() {
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) return true;
  int err = SSL_get_error(ssl_, rc);
  if (err == SSL_ERROR_WANT_READ) return false;
  return fail(EPROTO, "TLS handshake failed: " + openssl_reason());
}

Result<void> TlsSession::encrypt(std::span<const uint8_t> plaintext) {
  while (!plaintext.empty()) {
    int n = static_cast<int>(std::min<size_t>(plaintext.size(), INT_MAX));
    int rc = SSL_write(ssl_, plaintext.data(), n);
    if (rc <= 0) return fail(EPROTO, "TLS write: " + openssl_reason());
    plaintext = plaintext.subspan(static_cast<size_t>(rc));
  }
  return {};
}

std::span<const uint8_t> TlsSession::output() const { return out_->readable(); }

void TlsSession::consume(size_t n) { out_->consume(n); }

Result<void> TlsSession::feed(std::span<const uint8_t> ciphertext) {
  in_->append(ciphertext.data(), ciphertext.size());
  return {};
}

Result<size_t> TlsSession::decrypt(std::span<uint8_t> out) {
  size_t got = 0;
  int rc = SSL_read_ex(ssl_, out.data(), out.size(), &got);
  if (rc == 1) return got;
  switch (SSL_get_error(ssl_, rc)) {
    case SSL_ERROR_WANT_READ:
      return 0;
    case SSL_ERROR_ZERO_RETURN:
      return fail(ECONNRESET, "peer closed the connection");
    default:
      return fail(EPROTO, "TLS read: " + openssl_reason());
  }
}

bool TlsSession::has_buffered() const {
  return SSL_pending(ssl_) > 0 || !in_->readable().empty();
}

std::string TlsSession::peer_id() const {
  X509* cert = SSL_get0_peer_certificate(ssl_);
  return cert ? fingerprint(cert) : std::string();
}

}  // namespace bkp::net
