// TLS sessions on memory BIOs (see tls.h).
#include "common/net/tls.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <climits>

namespace bkp::net {
namespace {

// Any certificate passes the X.509 check (they are self-signed by design); TLS 1.3 still makes
// the peer prove it holds the certificate's key, and the caller checks the fingerprint.
int accept_any_certificate(int, X509_STORE_CTX*) { return 1; }

}  // namespace

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
  s->ssl_ = SSL_new(config.ctx());
  s->in_ = BIO_new(BIO_s_mem());
  s->out_ = BIO_new(BIO_s_mem());
  if (!s->ssl_ || !s->in_ || !s->out_) {
    BIO_free(s->in_);
    BIO_free(s->out_);
    s->in_ = s->out_ = nullptr;
    return fail(ENOMEM, "TLS session: " + openssl_reason());
  }
  BIO_set_mem_eof_return(s->in_, -1);  // an empty input is "want more", not end of stream
  SSL_set_bio(s->ssl_, s->in_, s->out_);
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

std::span<const uint8_t> TlsSession::output() const {
  char* data = nullptr;
  long n = BIO_get_mem_data(out_, &data);
  if (n <= 0) return {};
  return {reinterpret_cast<const uint8_t*>(data) + out_consumed_,
          static_cast<size_t>(n) - out_consumed_};
}

void TlsSession::consume(size_t n) {
  out_consumed_ += n;
  char* data = nullptr;
  if (out_consumed_ >= static_cast<size_t>(BIO_get_mem_data(out_, &data))) {
    (void)BIO_reset(out_);
    out_consumed_ = 0;
  }
}

Result<void> TlsSession::feed(std::span<const uint8_t> ciphertext) {
  if (ciphertext.empty()) return {};
  if (BIO_write(in_, ciphertext.data(), static_cast<int>(ciphertext.size())) !=
      static_cast<int>(ciphertext.size())) {
    return fail(ENOMEM, "TLS input: " + openssl_reason());
  }
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
  return SSL_pending(ssl_) > 0 || BIO_ctrl_pending(in_) > 0;
}

std::string TlsSession::peer_id() const {
  X509* cert = SSL_get0_peer_certificate(ssl_);
  return cert ? fingerprint(cert) : std::string();
}

}  // namespace bkp::net
