// write_of: a wire::Write carrying a test's bytes, as a node's Write frame would, for tests that
// feed an Applier or a stream::Receiver directly instead of going through frames.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "common/wire/messages.h"

namespace bkp::testutil {

// The Write views data, which must outlive it.
inline wire::Write write_of(uint64_t id, uint64_t offset, std::string_view data) {
  wire::Write w;
  w.id = id;
  w.offset = offset;
  w.data = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  return w;
}

}  // namespace bkp::testutil
