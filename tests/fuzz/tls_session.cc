// Fuzz target: a TLS session (common/net/tls.h) and the byte queues under it, the only code of
// ours that bytes from a peer reach before it has proved who it is. Two kinds of input, by the
// first byte:
//   even  the rest is what an unknown client sends, fed to a server session in slices the input
//         picks, with a handshake step after each;
//   odd   a real client and server shake hands and then send the input's plaintext both ways,
//         while the input damages the ciphertext between them (an XOR at chosen offsets of
//         chosen deliveries) and picks the slice sizes of every delivery.
// Properties: nothing crashes; a session never buffers output without bound; an undamaged
// exchange never fails, however it is sliced; whatever decrypt() returns is exactly what the
// other side encrypted, in order (damage gives an error or nothing, never other bytes).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/net/identity.h"
#include "common/net/tls.h"
#include "tests/fuzz/fuzz.h"

namespace {

namespace fs = std::filesystem;
using namespace bkp::net;
using bkp::fuzz::Input;

struct Configs {
  std::shared_ptr<TlsConfig> server, client;
};

const Configs& configs() {
  static const Configs c = [] {
    const fs::path& root = bkp::fuzz::scratch_root("tls");
    auto server = TlsConfig::load(root / "server.pem", "fuzz-server");
    auto client = TlsConfig::load(root / "client.pem", "fuzz-client");
    FUZZ_CHECK(server && client, "no TLS identities");
    return Configs{*server, *client};
  }();
  return c;
}

constexpr size_t kMaxOutput = 1u << 20;

void unknown_client(Input& in) {
  auto server = TlsSession::make(*configs().server, TlsSide::kServer);
  FUZZ_CHECK(server.has_value(), "no server session");
  while (!in.done()) {
    if (!(*server)->feed(in.take(1 + in.byte() % 200 * (in.byte() % 4 ? 1 : 97)))) return;
    auto step = (*server)->handshake();
    FUZZ_CHECK((*server)->output().size() < kMaxOutput, "a handshake buffers without bound");
    if (!step) return;
    (*server)->consume((*server)->output().size());
    FUZZ_CHECK(!*step, "a handshake completed with a client that proved nothing");
  }
}

// One delivery from one session to the other: a slice of what waits, damaged as the input says
// (then `damaged` is set). False when the receiver refused it.
bool deliver(Input& in, TlsSession& from, TlsSession& to, bool& damaged) {
  auto out = from.output();
  // Once the input is used up, everything waiting goes undamaged.
  size_t n = in.done() ? out.size() : std::min<size_t>(out.size(), 1 + in.byte() * 41);
  std::vector<uint8_t> bytes(out.begin(), out.begin() + static_cast<long>(n));
  from.consume(n);
  if (!bytes.empty() && !in.done() && in.byte() % 8 == 0) {
    bytes[in.byte() * 7 % bytes.size()] ^= in.byte() | 1;
    damaged = true;
  }
  return to.feed(bytes).has_value();
}

// A failure is only allowed once the input damaged the stream.
void expect_damage(bool damaged, const char* what) { FUZZ_CHECK(damaged, what); }

void real_peers(Input& in) {
  auto client = TlsSession::make(*configs().client, TlsSide::kClient);
  auto server = TlsSession::make(*configs().server, TlsSide::kServer);
  FUZZ_CHECK(client && server, "no sessions");
  TlsSession& c = **client;
  TlsSession& s = **server;
  bool c_done = false, s_done = false, damaged = false;
  for (int step = 0; step < 2000 && !(c_done && s_done); ++step) {
    auto cs = c.handshake();
    auto ss = s.handshake();
    if (!cs || !ss) return expect_damage(damaged, "an undamaged handshake failed");
    c_done = *cs;
    s_done = *ss;
    if (!deliver(in, c, s, damaged) || !deliver(in, s, c, damaged))
      return expect_damage(damaged, "undamaged handshake bytes were refused");
  }
  if (!(c_done && s_done)) return expect_damage(damaged, "an undamaged handshake never ended");
  // Plaintext both ways; each side must receive a prefix of what the other sent.
  std::vector<uint8_t> sent[2], got[2];
  TlsSession* side[2] = {&c, &s};
  std::vector<uint8_t> room(1 + in.byte() * 17);
  for (int step = 0; step < 64 && !in.done(); ++step) {
    int from = in.byte() & 1;
    // Some writes are repeated into hundreds of KiB, so the queues grow, wrap and compact.
    auto plain = in.take(in.byte() * 3);
    for (int copies = 1 + in.byte() % 4 * 100; copies > 0 && !plain.empty(); --copies) {
      if (!side[from]->encrypt(plain)) return expect_damage(damaged, "encrypt failed");
      sent[from].insert(sent[from].end(), plain.begin(), plain.end());
    }
    FUZZ_CHECK(side[from]->output().size() < kMaxOutput + 4 * sent[from].size(),
               "encrypted output beyond what was written");
    if (!deliver(in, *side[from], *side[1 - from], damaged))
      return expect_damage(damaged, "undamaged records were refused");
    for (;;) {
      auto d = side[1 - from]->decrypt(room);
      if (!d) return expect_damage(damaged, "undamaged records did not decrypt");
      if (*d == 0) break;
      got[from].insert(got[from].end(), room.begin(), room.begin() + static_cast<long>(*d));
      FUZZ_CHECK(got[from].size() <= sent[from].size() &&
                     std::equal(got[from].begin(), got[from].end(), sent[from].begin()),
                 "decrypted bytes that were never sent");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  if (in.byte() % 2 == 0) {
    unknown_client(in);
  } else {
    real_peers(in);
  }
  return 0;
}
