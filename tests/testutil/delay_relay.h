// DelayRelay: a TCP relay on 127.0.0.1 that holds every byte for a fixed delay in each
// direction, so a test can put a replicator "far away" from backupd (placement weighs the
// measured round trip) without network namespaces or tc. Bytes pass unchanged (TLS included)
// and in order; a close on one side is passed on after the same delay.
//
// A test can also hold connections still at a chosen point: after hold_after(N), each
// connection, open or new, takes N more bytes from the target (and passes them to the client)
// and then reads nothing more (a close included) until release(), so "the source dies in the
// middle of a transfer" happens exactly there. The target is held back, not only the client:
// beyond the N bytes it can have sent only what fits in its socket's send buffer and the
// relay's small receive buffer, the rest waits in its send() until release().
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <thread>

#include "common/result.h"
#include "common/unique_fd.h"

namespace bkp::testutil {

class DelayRelay {
 public:
  // Listens on 127.0.0.1 (any free port) and relays each connection to 127.0.0.1:target.
  static Result<std::unique_ptr<DelayRelay>> start(uint16_t target,
                                                   std::chrono::milliseconds delay);
  ~DelayRelay();  // closes every connection and joins every thread
  DelayRelay(const DelayRelay&) = delete;
  DelayRelay& operator=(const DelayRelay&) = delete;

  uint16_t port() const { return port_; }

  // Every connection, open or accepted later, stops reading from its target after `bytes`
  // more (counted from this call, or from its start).
  void hold_after(uint64_t bytes);
  // Waits up to timeout until some connection holds (has taken its bytes from the target; they
  // reach the client after the delay); true if one does.
  bool wait_held(std::chrono::milliseconds timeout);
  // Lets every held connection go on (and later ones pass everything).
  void release();

  // Shared by the relay and the directions it holds (delay_relay.cc).
  struct Gate;

 private:
  struct Pump;
  DelayRelay(UniqueFd listener, uint16_t port, uint16_t target, std::chrono::milliseconds delay);
  void accept_loop();

  UniqueFd listener_;
  const uint16_t port_;
  const uint16_t target_;
  const std::chrono::milliseconds delay_;
  std::mutex mu_;
  bool stopping_ = false;                     // guarded by mu_
  std::list<std::unique_ptr<Pump>> pumps_;    // guarded by mu_
  std::shared_ptr<Gate> gate_;                // before acceptor_: the acceptor uses it
  std::thread acceptor_;
};

}  // namespace bkp::testutil
