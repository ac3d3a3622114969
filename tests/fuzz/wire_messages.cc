// Fuzz target: every message decoder of the wire protocol (common/wire/messages.h), fed what a
// hostile or broken peer could send as a frame's payload. The first input byte picks the
// message type, the rest is the payload. Properties: no decoder crashes, reads out of bounds or
// overflows (the sanitizers' part); whatever one accepts encodes back to the same bytes (no
// field is lost, narrowed or changed on the way through a relay), or for texts the decoder
// escapes, to bytes that decode and encode the same again; an accepted Write keeps its place
// and data through an encoder.
#include <span>
#include <vector>

#include "common/wire/messages.h"
#include "tests/fuzz/fuzz.h"

namespace {

using namespace bkp::wire;
using Bytes = std::vector<uint8_t>;

// Texts that a peer shows to an operator (Error, NodeStatus.current_file, Dropped) have their
// control characters escaped by the decoder, so those may encode to other bytes than they came
// in: kEscapes. Every other accepted payload must encode back to exactly itself.
enum Canonical { kExact, kEscapes };

template <class Decode>
void round_trip(std::span<const uint8_t> payload, Decode decode, Canonical canonical = kExact) {
  auto m = decode(payload);
  if (!m) return;
  Bytes once;
  encode(*m, once);
  FUZZ_CHECK(canonical == kEscapes ||
                 std::equal(once.begin(), once.end(), payload.begin(), payload.end()),
             "an accepted message encodes to other bytes than it was decoded from");
  auto again = decode(std::span<const uint8_t>(once));
  FUZZ_CHECK(again.has_value(), "an accepted message's encoding is rejected");
  Bytes twice;
  encode(*again, twice);
  FUZZ_CHECK(once == twice, "a message changes when it is decoded and encoded again");
}

void write_round_trip(uint8_t flags, std::span<const uint8_t> payload) {
  auto w = decode_write(flags, payload);
  if (!w) return;
  FUZZ_CHECK(w->offset + w->data.size() >= w->offset, "an accepted Write overflows its offset");
  WriteEncoder encoder;
  Bytes out;
  uint8_t out_flags = encoder.encode(w->id, w->offset, w->data, out);
  auto again = decode_write(out_flags, out);
  FUZZ_CHECK(again.has_value(), "an accepted Write's encoding is rejected");
  FUZZ_CHECK(again->id == w->id && again->offset == w->offset, "a Write changes its place");
  FUZZ_CHECK(again->data.size() == w->data.size() &&
                 std::equal(w->data.begin(), w->data.end(), again->data.begin()),
             "a Write changes its data");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> payload(data + 1, size - 1);
  switch (data[0] % 26) {
    case 0: round_trip(payload, decode_hello); break;
    case 1: round_trip(payload, decode_hello_ok); break;
    case 2: round_trip(payload, decode_error, kEscapes); break;
    case 3: round_trip(payload, decode_attach); break;
    case 4: round_trip(payload, decode_node_status, kEscapes); break;
    case 5: round_trip(payload, decode_select); break;
    case 6: round_trip(payload, decode_position); break;
    case 7: round_trip(payload, decode_op); break;
    case 8: round_trip(payload, decode_commit); break;
    case 9: round_trip(payload, decode_ack); break;
    case 10: round_trip(payload, decode_manifest_request); break;
    case 11: round_trip(payload, decode_manifest); break;
    case 12: round_trip(payload, decode_digest_request); break;
    case 13: round_trip(payload, decode_digests); break;
    case 14: round_trip(payload, decode_snapshot_inventory_request); break;
    case 15: round_trip(payload, decode_snapshot_inventory); break;
    case 16: round_trip(payload, decode_snapshot_begin); break;
    case 17: round_trip(payload, decode_snapshot_data); break;
    case 18: round_trip(payload, decode_snapshot_end); break;
    case 19: round_trip(payload, decode_snapshot_stored); break;
    case 20: round_trip(payload, decode_usage_request); break;
    case 21: round_trip(payload, decode_usage); break;
    case 22: round_trip(payload, decode_drop); break;
    case 23: round_trip(payload, decode_dropped, kEscapes); break;
    case 24: write_round_trip(0, payload); break;
    default: write_round_trip(kFlagZstd, payload); break;
  }
  return 0;
}
