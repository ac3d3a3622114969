// Restore: the one streaming command. backupd answers the request with the snapshot's size,
// then sends exactly that many bytes of tgz in Data frames, then a final Response. The bytes
// go straight from each frame into libarchive (tools/extract.h), one frame at a time, so
// memory stays at one frame whatever the snapshot's size.
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
#include "common/progress.h"
#include "common/wire/frame.h"
#include "tools/extract.h"
#include "tools/format.h"
#include "tools/views.h"

namespace bkp::tools {
namespace {

class DataStream : public ByteSource {
 public:
  DataStream(ControlClient& client, uint64_t expected, progress::Meter& meter)
      : client_(client), expected_(expected), meter_(meter) {
    meter_.begin("restore");
    meter_.update({0, expected_, 0, 0});
  }

  Result<std::span<const uint8_t>> next() override {
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

  // Why the stream stopped, when it did (the extractor only sees an Error).
  const std::optional<Failure>& failure() const { return failure_; }

 private:
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
  uint64_t received_ = 0;
  progress::Meter& meter_;
  std::vector<uint8_t> current_;
  std::optional<Failure> failure_;
};

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
  DataStream stream(client, size->get<uint64_t>(), *meter);
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
