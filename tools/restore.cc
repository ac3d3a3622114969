// Restore: the one streaming command. backupd answers the request with the snapshot's size
// and its part digests, then sends exactly that many bytes of tgz in Data frames, then a final
// Response. Each 8 MiB part is checked against its SHA-256 (common/part_digests.h) before any
// of it goes into libarchive (tools/extract.h), so a damaged archive fails the restore with
// the part named and memory stays at one part whatever the snapshot's size (one frame when
// backupd sends no digests).
//
// DataStream enforces the framing contract: more bytes than announced, a Response before the
// last byte, or any other frame type is a protocol error, and a failure Response mid-stream
// (the server hit a read error) keeps its code and sentence. Only after the final Response
// says done is the restore reported as complete.
#include "tools/restore.h"

#include <fmt/format.h>

#include <optional>

#include "common/files.h"
#include "common/log.h"
#include "common/part_digests.h"
#include "common/progress.h"
#include "common/wire/frame.h"
#include "tools/extract.h"
#include "tools/format.h"
#include "tools/views.h"

namespace bkp::tools {
namespace {

class DataStream : public ByteSource {
 public:
  // digests: the SHA-256 of every kPartSize bytes, as backupd's catalog has them; empty: none
  // to check (an older backupd, or an archive too large to list them in one answer).
  DataStream(ControlClient& client, uint64_t expected, std::vector<PartDigest> digests,
             std::string snapshot_id, progress::Meter& meter)
      : client_(client), expected_(expected), digests_(std::move(digests)),
        snapshot_id_(std::move(snapshot_id)), meter_(meter) {
    meter_.begin("restore");
    meter_.update({0, expected_, 0, 0});
  }

  // With digests, the bytes come one whole part at a time, each checked before the extractor
  // sees any of it: a damaged archive fails the restore before a byte of the bad part lands.
  Result<std::span<const uint8_t>> next() override {
    if (digests_.empty()) return next_frame();
    const uint64_t part_end = std::min(expected_, (checked_ + 1) * kPartSize);
    part_.clear();
    while (received_ < part_end) {
      auto bytes = BKP_TRY(next_frame());
      part_.insert(part_.end(), bytes.begin(), bytes.end());
    }
    if (part_.empty()) return std::span<const uint8_t>();
    PartHasher hasher;
    hasher.feed(std::span<const char>(reinterpret_cast<const char*>(part_.data()), part_.size()));
    if (hasher.finish().front() != digests_[checked_]) {
      return stop(Failure{Exit::kFailure, "damaged",
                          fmt::format("part {} of snapshot {} from {} does not match its digest: "
                                      "the archive there is damaged; nothing of that part was "
                                      "restored",
                                      checked_, snapshot_id_, client_.server_text())});
    }
    ++checked_;
    return std::span<const uint8_t>(part_);
  }

  // Why the stream stopped, when it did (the extractor only sees an Error).
  const std::optional<Failure>& failure() const { return failure_; }

 private:
  // The next Data frame's bytes (up to a part boundary never matters: frames are 1 MiB).
  Result<std::span<const uint8_t>> next_frame() {
    if (received_ == expected_) return std::span<const uint8_t>();
    auto frame = client_.next_frame();
    // An empty Data frame must not look like the end of the stream to the extractor.
    while (frame && frame->type == wire::MsgType::kData && frame->payload.empty()) {
      frame = client_.next_frame();
    }
    if (!frame) return stop(frame.error());
    if (frame->type == wire::MsgType::kResponse) {
      auto response = client_.parse_response(*frame);
      if (!response) return stop(response.error());
      return stop(
          protocol(fmt::format("the stream ended after {} of {} bytes", received_, expected_)));
    }
    if (frame->type != wire::MsgType::kData) {
      return stop(protocol(fmt::format("expected Data, got {}", wire::type_name(frame->type))));
    }
    if (frame->payload.size() > expected_ - received_) {
      return stop(protocol(fmt::format("more than the announced {} bytes", expected_)));
    }
    received_ += frame->payload.size();
    meter_.update({received_, expected_ - received_, 0, 0});
    current_ = std::move(frame->payload);
    return std::span<const uint8_t>(current_);
  }

  Failure protocol(std::string message) const {
    return Failure{Exit::kFailure, std::string(kCodeProtocol),
                   fmt::format("restore stream from {}: {}", client_.server_text(), message)};
  }
  tl::unexpected<Error> stop(Failure f) {
    meter_.interrupt();
    failure_ = std::move(f);
    return tl::unexpected(Error{EIO, failure_->message});
  }

  ControlClient& client_;
  uint64_t expected_;
  std::vector<PartDigest> digests_;
  std::string snapshot_id_;
  uint64_t received_ = 0;
  uint64_t checked_ = 0;  // parts checked and handed out
  progress::Meter& meter_;
  std::vector<uint8_t> current_;
  std::vector<uint8_t> part_;
  std::optional<Failure> failure_;
};

// The "digests" of a restore answer (64 hex digits per part), when present and well formed for
// an archive of `bytes`; empty otherwise (nothing is checked then).
std::vector<PartDigest> digests_of(const Json& header, uint64_t bytes) {
  std::vector<PartDigest> out;
  auto it = header.find("digests");
  if (it == header.end() || !it->is_string()) return out;
  const std::string& hex = it->get_ref<const std::string&>();
  if (hex.size() != part_count(bytes) * 64) return out;
  for (size_t at = 0; at < hex.size(); at += 64) {
    auto d = digest_from_hex(std::string_view(hex).substr(at, 64));
    if (!d) return {};
    out.push_back(*d);
  }
  return out;
}

// The final Response after the last Data byte.
Outcome<void> expect_done(ControlClient& client) {
  wire::Frame frame = BKP_TRY(client.next_frame());
  if (frame.type != wire::MsgType::kResponse) {
    return fail_with(Exit::kFailure, kCodeProtocol,
                     fmt::format("restore stream from {}: expected the final Response, got {}",
                                 client.server_text(), wire::type_name(frame.type)));
  }
  Json done = BKP_TRY(client.parse_response(frame));
  if (auto it = done.find("done"); it == done.end() || !it->is_boolean() || !it->get<bool>()) {
    return fail_with(Exit::kFailure, kCodeProtocol,
                     fmt::format("restore stream from {}: the final Response lacks \"done\": true",
                                 client.server_text()));
  }
  return {};
}

}  // namespace

Outcome<Report> run_restore(ControlClient& client, const Invocation& inv, const Json& request) {
  Json header = BKP_TRY(client.call(request));
  auto size = header.find("bytes");
  if (size == header.end() || !size->is_number_unsigned()) {
    return fail_with(Exit::kFailure, kCodeProtocol,
                     fmt::format("restore answer from {} has no byte count", client.server_text()));
  }
  Json snapshot = header.contains("snapshot") ? header["snapshot"] : Json();
  std::string snapshot_id = snapshot.is_object() ? field_text(snapshot, "id") : inv.snapshot;

  if (auto made = make_dirs(inv.to); !made) {
    return tl::unexpected(failure_from(made.error(), Exit::kFailure, kCodeLocal));
  }
  // Progress of the download (compressed bytes) and the entry being written: a bar on a
  // terminal, a line every 10 s otherwise; nothing with -q.
  auto meter = std::make_shared<progress::Meter>(
      fmt::format("{} snapshot {}", volume_name(inv.host, inv.path), snapshot_id));
  std::optional<progress::Display> display;
  if (log::enabled(log::Level::kInfo)) {
    display.emplace(progress::display_options(std::chrono::seconds(10)));
    display->add(meter);
    display->start();
  }
  DataStream stream(client, size->get<uint64_t>(), digests_of(header, size->get<uint64_t>()),
                    snapshot_id, *meter);
  auto stats = extract_archive(stream, inv.to, meter.get());
  if (display) display->stop();
  if (!stats) {
    if (stream.failure()) return tl::unexpected(*stream.failure());
    return fail_with(Exit::kFailure, kCodeLocal,
                     fmt::format("restore into {}: {}", inv.to, stats.error().message));
  }
  BKP_TRY_VOID(expect_done(client));

  Report r;
  r.json =
      Json{{"ok", true}, {"snapshot", snapshot}, {"files", stats->files}, {"bytes", stats->bytes}};
  r.messages.push_back(fmt::format(
      "restored {} and {} ({}) of {} from snapshot {} into {}",
      counted(stats->files, "file", "files"), counted(stats->dirs, "directory", "directories"),
      human_size(stats->bytes), volume_name(inv.host, inv.path), snapshot_id, inv.to));
  if (!stats->owners_restored) {
    r.warnings.push_back(
        "not running as root: the restored files belong to you, not to their original owners");
  }
  r.warnings.insert(r.warnings.end(), stats->first_warnings.begin(), stats->first_warnings.end());
  if (stats->warnings > stats->first_warnings.size()) {
    r.warnings.push_back(
        fmt::format("... and {} more warnings", stats->warnings - stats->first_warnings.size()));
  }
  return r;
}

}  // namespace bkp::tools
