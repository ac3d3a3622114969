// The control protocol's framing, serving side (control_channel.h). It exists so backupd and a
// replicator answer bkptool in one way: the same request loop, the same error shape, and the
// same stream of an archive (header, 1 MiB Data frames, done), byte for byte.
#include "common/net/control_channel.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include <fmt/format.h>

#include "common/wire/frame.h"

namespace bkp::net {
namespace {

using json = nlohmann::json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

json control_error_json(std::string_view code, std::string_view message) {
  return json{{"ok", false}, {"code", code}, {"error", message}};
}

tl::expected<ArchiveRange, std::string> archive_range(const json& request) {
  ArchiveRange range;
  for (const char* key : {"offset", "length"}) {
    auto it = request.find(key);
    if (it == request.end()) continue;
    if (!it->is_number_integer() || it->get<int64_t>() < 0) {
      return tl::unexpected(fmt::format("field '{}' must be a non-negative integer", key));
    }
    range.ranged = true;
    if (key == std::string_view("offset")) {
      range.offset = it->get<uint64_t>();
    } else {
      range.length = it->get<uint64_t>();
    }
  }
  if (auto it = request.find("digests"); it != request.end()) {
    if (!it->is_boolean()) return tl::unexpected(std::string("field 'digests' must be a boolean"));
    range.digests = it->get<bool>();
  }
  return range;
}

Result<ControlRequest> ControlChannel::next(int idle_ms) {
  while (true) {
    auto frame = BKP_TRY(conn_.recv(idle_ms));
    if (frame.type == wire::MsgType::kPing) continue;
    if (frame.type != wire::MsgType::kRequest) {
      return fail(EPROTO, fmt::format("unexpected {} frame on a control connection",
                                      wire::type_name(frame.type)));
    }
    ControlRequest request;
    request.cmd = "?";
    request.body = json::parse(frame.payload.begin(), frame.payload.end(), nullptr,
                               /*allow_exceptions=*/false);
    if (request.body.is_discarded() || !request.body.is_object()) {
      request.invalid = "request is not a JSON object";
    } else if (auto it = request.body.find("cmd"); it == request.body.end()) {
      request.invalid = "missing field 'cmd'";
    } else if (!it->is_string()) {
      request.invalid = "field 'cmd' must be a string";
    } else {
      request.cmd = it->get<std::string>();
    }
    return request;
  }
}

Result<void> ControlChannel::respond(const json& response) {
  std::string text = dump(response);
  if (text.size() > wire::kMaxPayload) {
    text = dump(control_error_json("internal", "response too large for one frame"));
  }
  BKP_TRY_VOID(conn_.send(wire::MsgType::kResponse, 0,
                          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()),
                                                   text.size())));
  return conn_.flush();
}

Result<void> ControlChannel::respond_error(std::string_view code, std::string_view message) {
  return respond(control_error_json(code, message));
}

Result<void> ControlChannel::stream(const ArchiveStream& archive) {
  const uint64_t total = archive.bytes;
  const ArchiveRange& range = archive.range;
  if (range.offset > total || range.length.value_or(0) > total - range.offset) {
    return respond_error("bad_request",
                         fmt::format("range of {} bytes at offset {} is beyond snapshot {} ({} "
                                     "bytes)",
                                     range.length.value_or(0), range.offset, archive.id, total));
  }
  const uint64_t length = range.length.value_or(total - range.offset);
  json header{{"ok", true}, {"snapshot", archive.snapshot}, {"bytes", total}};
  if (range.ranged) {
    header["offset"] = range.offset;
    header["length"] = length;
  }
  // Left out when unknown or too many for one response (an archive over about 400 GiB).
  if (range.digests && archive.part_size != 0 &&
      archive.digests.size() == part_count(total, archive.part_size) &&
      archive.digests.size() < kMaxDigestsInResponse) {
    std::string hex;
    hex.reserve(archive.digests.size() * 64);
    for (const auto& d : archive.digests) hex += to_hex(d);
    header["digests"] = std::move(hex);
  }
  for (const auto& [key, value] : archive.extra.items()) header[key] = value;
  BKP_TRY_VOID(respond(header));
  std::vector<uint8_t> buf(kArchiveChunk);
  uint64_t sent = 0;
  while (sent < length) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), length - sent));
    size_t n = BKP_TRY(archive.source->read_at(
        range.offset + sent, std::span<char>(reinterpret_cast<char*>(buf.data()), want)));
    if (n == 0) {
      return fail(EIO, fmt::format("snapshot {} shrank while being restored", archive.id));
    }
    BKP_TRY_VOID(conn_.send(wire::MsgType::kData, 0,
                            std::span<const uint8_t>(buf.data(), n)));
    sent += n;
  }
  return respond(json{{"ok", true}, {"done", true}});
}

}  // namespace bkp::net
