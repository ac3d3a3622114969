// DelayRelay: a TCP relay on 127.0.0.1 that holds every byte for a fixed delay in each
// direction, so a test can put a replicator "far away" from backupd (placement weighs the
// measured round trip) without network namespaces or tc. Bytes pass unchanged (TLS included)
// and in order; a close on one side is passed on after the same delay.
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
  std::thread acceptor_;
};

}  // namespace bkp::testutil
