// Tables for `bkptool list`, `history` and `snapshots`. Each column is chosen for the question
// an operator asks at that moment: list answers "is every volume being backed up, and how far
// behind is it?", history "when did it last work, and why did it fail?", snapshots "what can I
// restore?". Dates are local, sizes binary, and anything the server left out shows as "-".
#include "tools/views.h"

#include <fmt/format.h>

#include <cmath>

#include "tools/format.h"

namespace bkp::tools {
namespace {

using Align = Table::Align;

const Json* member(const Json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string time_field(const Json& object, const char* key) {
  const Json* v = member(object, key);
  if (v == nullptr) return "-";
  if (!v->is_string()) return field_text(object, key);
  return local_time(v->get<std::string>());
}

double field_double(const Json& object, const char* key) {
  const Json* v = member(object, key);
  return v != nullptr && v->is_number() ? v->get<double>() : 0.0;
}

std::string lag_text(const Json& volume) {
  uint64_t ops = field_u64(volume, "lag_ops");
  uint64_t bytes = field_u64(volume, "lag_bytes");
  double seconds = field_double(volume, "lag_seconds");
  if (ops == 0 && bytes == 0 && seconds <= 0) return "none";
  auto ms = static_cast<uint64_t>(std::llround(std::max(seconds, 0.0) * 1000.0));
  return fmt::format("{} ({} ops, {})", human_duration_ms(ms), ops, human_size(bytes));
}

std::string changed_text(const Json& run) {
  return fmt::format("{}, {}", counted(field_u64(run, "changed_files"), "file", "files"),
                     human_size(field_u64(run, "changed_bytes")));
}

}  // namespace

std::string volume_name(std::string_view host, std::string_view path) {
  return fmt::format("{}:{}", host, path);
}

std::string field_text(const Json& object, const char* key) {
  const Json* v = member(object, key);
  if (v == nullptr) return "-";
  if (v->is_string()) return v->get<std::string>();
  return v->dump(-1, ' ', false, Json::error_handler_t::replace);
}

uint64_t field_u64(const Json& object, const char* key) {
  const Json* v = member(object, key);
  if (v == nullptr) return 0;
  if (v->is_number_unsigned()) return v->get<uint64_t>();
  if (v->is_number_integer()) {
    return v->get<int64_t>() < 0 ? 0 : static_cast<uint64_t>(v->get<int64_t>());
  }
  if (v->is_number_float()) {
    double d = v->get<double>();
    return d <= 0 ? 0 : d >= 1.8e19 ? UINT64_MAX : static_cast<uint64_t>(d);
  }
  return 0;
}

std::string render_volumes(const Json& volumes) {
  Table table({"HOST", "PORT", "PATH", "EVERY", "LINK", "LAST RUN", "STATUS", "NEXT RUN", "LAG"},
              {Align::kLeft, Align::kRight, Align::kLeft, Align::kRight});
  std::string notes;
  for (const Json& v : volumes) {
    const Json* last = member(v, "last_run");
    const Json* connected = member(v, "connected");
    const Json* every = member(v, "every_seconds");
    table.add({field_text(v, "host"), field_text(v, "port"), field_text(v, "path"),
               every != nullptr && every->is_number_integer() ? human_period(every->get<int64_t>())
                                                              : field_text(v, "every_seconds"),
               connected == nullptr                                ? "-"
               : connected->is_boolean() && connected->get<bool>() ? "up"
                                                                   : "down",
               last != nullptr ? time_field(*last, "started_at") : "never",
               last != nullptr ? field_text(*last, "status") : "-", time_field(v, "next_run"),
               lag_text(v)});
    std::string error = field_text(v, "last_error");
    if (error != "-" && !error.empty()) {
      notes += fmt::format("{}: last error: {}\n",
                           volume_name(field_text(v, "host"), field_text(v, "path")), error);
    }
  }
  std::string out = table.render();
  if (!notes.empty()) out += "\n" + notes;
  return out;
}

std::string render_runs(const Json& runs) {
  Table table(
      {"STARTED", "STATUS", "SNAPSHOT", "SIZE", "DURATION", "CHANGED", "ERROR"},
      {Align::kLeft, Align::kLeft, Align::kLeft, Align::kRight, Align::kRight, Align::kRight});
  for (const Json& r : runs) {
    std::string status = field_text(r, "status");
    bool has_snapshot = member(r, "snapshot") != nullptr;
    std::string error = member(r, "error") != nullptr ? field_text(r, "error") : "";
    table.add(
        {time_field(r, "started_at"), status, has_snapshot ? field_text(r, "snapshot") : "-",
         has_snapshot && member(r, "snapshot_bytes") != nullptr
             ? human_size(field_u64(r, "snapshot_bytes"))
             : "-",
         member(r, "duration_ms") != nullptr ? human_duration_ms(field_u64(r, "duration_ms")) : "-",
         changed_text(r), error});
  }
  return table.render();
}

std::string render_snapshots(const Json& snapshots) {
  Table table({"ID", "CREATED", "SIZE"}, {Align::kLeft, Align::kLeft, Align::kRight});
  for (const Json& s : snapshots) {
    table.add({field_text(s, "id"), time_field(s, "created_at"),
               member(s, "bytes") != nullptr ? human_size(field_u64(s, "bytes")) : "-"});
  }
  return table.render();
}

}  // namespace bkp::tools
