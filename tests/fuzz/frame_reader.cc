// Fuzz target: the incremental frame reader (common/wire/frame.h), the first code that sees a
// peer's bytes. The input is a list of frames (type, flags, sequence step, payload), sealed
// with the real header and checksum, and optionally damaged (one byte of the stream changed),
// then fed to a reader in slices whose sizes the input also picks, either copied in (feed) or
// read straight into its buffer (space/filled).
// Properties: an undamaged stream yields exactly its frames, in order, with their payloads,
// however it is cut, until the first frame the reader must refuse (unknown type or flags, a
// sequence step other than 1), where it reports an error; a damaged stream never yields a frame
// that differs from what was sealed at that place; the reader never buffers more than one
// frame's worth past what it returned.
#include <algorithm>
#include <span>
#include <vector>

#include "common/wire/frame.h"
#include "tests/fuzz/fuzz.h"

namespace {

using namespace bkp::wire;

struct Sealed {
  uint8_t type, flags;
  uint64_t seq;
  std::vector<uint8_t> payload;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t pos = 0;
  auto byte = [&]() -> uint8_t { return pos < size ? data[pos++] : 0; };
  // The stream.
  std::vector<Sealed> frames;
  std::vector<uint8_t> stream;
  uint64_t seq = 0;
  for (int n = byte() % 6; n > 0; --n) {
    Sealed f;
    f.type = byte();
    f.flags = byte() % 8 == 0 ? byte() : 0;
    uint8_t step = byte() % 16 == 0 ? byte() : 1;
    f.seq = seq + step;
    seq = f.seq;
    size_t len = std::min<size_t>(byte() | (size_t{byte()} << 8), size - pos);
    f.payload.assign(data + pos, data + pos + len);
    pos += len;
    stream.resize(stream.size() + kHeaderSize + len);
    std::copy(f.payload.begin(), f.payload.end(), stream.end() - static_cast<long>(len));
    seal_frame(static_cast<MsgType>(f.type), f.flags, f.seq,
               stream.data() + stream.size() - len - kHeaderSize, len);
    frames.push_back(std::move(f));
  }
  bool damaged = false;
  if (byte() % 4 == 0 && !stream.empty()) {
    size_t at = (byte() | (size_t{byte()} << 8)) % stream.size();
    uint8_t x = byte();
    damaged = x != 0;
    stream[at] ^= x;
  }
  // Feed it in slices.
  FrameReader reader;
  size_t fed = 0, got = 0;
  bool failed = false;
  while (fed < stream.size() && !failed) {
    size_t n = std::min<size_t>(stream.size() - fed, 1 + byte() % 64 * (byte() % 4 ? 1 : 997));
    if (byte() % 2) {
      reader.feed(std::span<const uint8_t>(stream.data() + fed, n));
    } else {
      auto room = reader.space(n);
      FUZZ_CHECK(room.size() >= n, "space() gave less room than asked");
      std::copy_n(stream.begin() + static_cast<long>(fed), n, room.begin());
      reader.filled(n);
    }
    fed += n;
    for (;;) {
      auto r = reader.next();
      if (!r) {
        failed = true;
        break;
      }
      if (!*r) break;
      FUZZ_CHECK(got < frames.size(), "a frame that was never sent");
      const Sealed& f = frames[got++];
      FUZZ_CHECK(static_cast<uint8_t>((*r)->type) == f.type && (*r)->flags == f.flags &&
                     (*r)->seq == f.seq,
                 "a frame's header differs from what was sent");
      FUZZ_CHECK((*r)->payload.size() == f.payload.size() &&
                     std::equal(f.payload.begin(), f.payload.end(), (*r)->payload.begin()),
                 "a frame's payload differs from what was sent");
    }
    FUZZ_CHECK(failed || reader.buffered() <= kHeaderSize + kMaxPayload + 64 * 997,
               "the reader holds more than a frame");
  }
  if (damaged) return 0;
  // Undamaged: every frame up to the first the rules refuse, and an error exactly there.
  size_t valid = 0;
  uint64_t last = 0;
  while (valid < frames.size()) {
    const Sealed& f = frames[valid];
    if (!is_known_type(f.type) || (f.flags & ~kFlagZstd) != 0 || f.seq != last + 1 ||
        f.payload.size() > kMaxPayload)
      break;
    last = f.seq;
    ++valid;
  }
  FUZZ_CHECK(got == valid, "the reader lost or invented a frame of an undamaged stream");
  FUZZ_CHECK(failed == (valid < frames.size()), "the reader accepted a frame it must refuse");
  return 0;
}
