// Tables for `bkptool list`, `history` and `snapshots`, and the blocks of `status`. Each is
// chosen for the question an operator asks at that moment: list answers "is every volume being
// backed up, and how far behind is it?", history "when did it last work, and why did it
// fail?", snapshots "what can I restore?", status "what is moving right now, and is every copy
// keeping up?". Dates are local, sizes binary, and anything the server left out shows as "-".
#include "tools/views.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

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

// "none", or "4.2 s (12 ops, 2.0 KiB)"; with the files too when the object has lag_files
// (STATUS and its replicas do, VOLUME does not).
std::string lag_text(const Json& object) {
  uint64_t ops = field_u64(object, "lag_ops");
  uint64_t bytes = field_u64(object, "lag_bytes");
  uint64_t files = field_u64(object, "lag_files");
  double seconds = field_double(object, "lag_seconds");
  if (ops == 0 && bytes == 0 && files == 0 && seconds <= 0) return "none";
  auto ms = static_cast<uint64_t>(std::llround(std::max(seconds, 0.0) * 1000.0));
  std::string files_text =
      member(object, "lag_files") != nullptr ? counted(files, "file", "files") + ", " : "";
  return fmt::format("{} ({} ops, {}{})", human_duration_ms(ms), ops, files_text,
                     human_size(bytes));
}

// A TRANSFER: "baseline [#####---------------]  25%  80.0 MiB of 320.0 MiB, 12.0 MiB/s, 3 files
// left".
std::string transfer_text(const Json& transfer) {
  const Json* percent = member(transfer, "percent");
  std::string text = fmt::format(
      "{} {}  {} of {}, {}/s", field_text(transfer, "phase"),
      progress_bar(percent != nullptr && percent->is_number() ? percent->get<int>() : 0),
      human_size(field_u64(transfer, "done_bytes")), human_size(field_u64(transfer, "total_bytes")),
      human_size(field_u64(transfer, "rate_bytes_per_second")));
  if (uint64_t files = field_u64(transfer, "files_left"); files > 0) {
    text += ", " + counted(files, "file", "files") + " left";
  }
  return text;
}

std::string link_text(const Json& object, std::string_view up, std::string_view down) {
  const Json* connected = member(object, "connected");
  if (connected == nullptr || !connected->is_boolean()) return "-";
  return std::string(connected->get<bool>() ? up : down);
}

// One STATUS object as labelled lines; continuation lines have an empty label.
std::vector<std::pair<std::string, std::string>> status_lines(const Json& s) {
  std::vector<std::pair<std::string, std::string>> lines;
  std::string node = link_text(s, "connected to ", "disconnected from ") + node_address(s);
  if (std::string error = field_text(s, "last_error"); error != "-") {
    node += "; last error: " + error;
  }
  lines.emplace_back("node", node);
  lines.emplace_back("lag", lag_text(s));
  std::string current;  // the file the node ships, shown once
  if (member(s, "current_file") != nullptr) {
    current = field_text(s, "current_file");
    lines.emplace_back("in transfer", current);
  }
  // A running transfer: its bar, then the file it moves unless that is `shown` already.
  auto add_transfer = [&](const Json& object, std::string label, const std::string& shown) {
    const Json* transfer = member(object, "transfer");
    if (transfer == nullptr) return;
    lines.emplace_back(std::move(label), transfer_text(*transfer));
    if (member(*transfer, "file") == nullptr) return;
    if (std::string file = field_text(*transfer, "file"); file != shown) {
      lines.emplace_back("", file);
    }
  };
  add_transfer(s, "ingest", current);
  if (member(s, "copies") != nullptr) lines.emplace_back("copies", copies_text(s));
  const Json* replicas = member(s, "replicas");
  if (replicas == nullptr || !replicas->is_array() || replicas->empty()) {
    lines.emplace_back("replicas", "none placed");
  } else {
    for (const Json& r : *replicas) {
      std::string text = link_text(r, "connected", "disconnected") + ", lag " + lag_text(r);
      if (member(r, "last_error") != nullptr) {
        text += fmt::format("; last error ({}): {}", time_field(r, "last_error_at"),
                            field_text(r, "last_error"));
      }
      lines.emplace_back("replica " + field_text(r, "name"), std::move(text));
      add_transfer(r, "", "");
    }
  }
  if (const Json* snap = member(s, "last_snapshot")) {
    lines.emplace_back("last snapshot",
                       fmt::format("{}, {}, {}", field_text(*snap, "name"),
                                   member(*snap, "bytes") != nullptr
                                       ? human_size(field_u64(*snap, "bytes"))
                                       : "-",
                                   time_field(*snap, "created_at")));
  } else {
    lines.emplace_back("last snapshot", "none yet");
  }
  const Json* every = member(s, "every_seconds");
  lines.emplace_back("next run", fmt::format("{} (every {})", time_field(s, "next_run"),
                                             every != nullptr && every->is_number_integer()
                                                 ? human_period(every->get<int64_t>())
                                                 : field_text(s, "every_seconds")));
  return lines;
}

std::string changed_text(const Json& run) {
  return fmt::format("{}, {}", counted(field_u64(run, "changed_files"), "file", "files"),
                     human_size(field_u64(run, "changed_bytes")));
}

}  // namespace

std::string volume_name(std::string_view host, std::string_view path) {
  return fmt::format("{}:{}", host, path);
}

std::string node_address(const Json& object) {
  // A server from before volumes were named by their node has no "address": its "host" is.
  std::string address = field_text(object, member(object, "address") ? "address" : "host");
  if (address.find(':') != std::string::npos) address = "[" + address + "]";
  return fmt::format("{}:{}", address, field_text(object, "port"));
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

bool is_under_replicated(const Json& volume) {
  const Json* under = member(volume, "under_replicated");
  return under != nullptr && under->is_boolean() && under->get<bool>();
}

std::string copies_text(const Json& volume) {
  std::vector<std::string> states;
  if (const Json* copies = member(volume, "copies"); copies != nullptr && copies->is_array()) {
    for (const Json& c : *copies) {
      states.push_back(fmt::format("{} {}", field_text(c, "name"), field_text(c, "state")));
    }
  }
  return fmt::format("{} of {} current: {}{}", field_text(volume, "copies_current"),
                     field_text(volume, "copies_wanted"), fmt::join(states, ", "),
                     is_under_replicated(volume) ? "; UNDER-REPLICATED" : "");
}

bool any_under_replicated(const Json& response) {
  const Json* volumes = member(response, "volumes");
  if (volumes == nullptr || !volumes->is_array()) return false;
  return std::any_of(volumes->begin(), volumes->end(), is_under_replicated);
}

std::string render_replicators(const Json& replicators) {
  Table table({"REPLICATOR", "LINK", "HOLDS", "FREE", "ROUND TRIP", "COPIES", "RESTORES AT"},
              {Align::kLeft, Align::kLeft, Align::kRight, Align::kRight, Align::kRight,
               Align::kRight, Align::kLeft});
  for (const Json& r : replicators) {
    const Json* measured = member(r, "measured");
    bool known = measured != nullptr && measured->is_boolean() && measured->get<bool>();
    table.add({field_text(r, "name"), link_text(r, "up", "down"),
               known ? human_size(field_u64(r, "stored_bytes")) : "-",
               known ? human_size(field_u64(r, "free_bytes")) : "-",
               known ? fmt::format("{:.1f} ms", field_double(r, "round_trip_ms")) : "-",
               field_text(r, "copies"),
               field_text(r, "restore_address").empty() ? "-" : field_text(r, "restore_address")});
  }
  return "replicators:\n" + table.render();
}

std::string render_volumes(const Json& volumes) {
  Table table({"HOST", "NODE", "PATH", "EVERY", "LINK", "LAST RUN", "STATUS", "NEXT RUN", "LAG",
               "COPIES"},
              {Align::kLeft, Align::kLeft, Align::kLeft, Align::kRight});
  std::string notes;
  for (const Json& v : volumes) {
    const Json* last = member(v, "last_run");
    const Json* connected = member(v, "connected");
    const Json* every = member(v, "every_seconds");
    table.add({field_text(v, "host"), node_address(v), field_text(v, "path"),
               every != nullptr && every->is_number_integer() ? human_period(every->get<int64_t>())
                                                              : field_text(v, "every_seconds"),
               connected == nullptr                                ? "-"
               : connected->is_boolean() && connected->get<bool>() ? "up"
                                                                   : "down",
               last != nullptr ? time_field(*last, "started_at") : "never",
               last != nullptr ? field_text(*last, "status") : "-", time_field(v, "next_run"),
               lag_text(v),
               member(v, "copies_wanted") == nullptr
                   ? "-"
                   : fmt::format("{}/{}", field_text(v, "copies_current"),
                                 field_text(v, "copies_wanted"))});
    const std::string name = volume_name(field_text(v, "host"), field_text(v, "path"));
    std::string error = field_text(v, "last_error");
    if (error != "-" && !error.empty()) notes += fmt::format("{}: last error: {}\n", name, error);
    if (is_under_replicated(v)) notes += fmt::format("{}: copies {}\n", name, copies_text(v));
    // Several servers on one catalog: another's volume comes with "connected": null (member()
    // reads null as absent); its link is that server's, not shown here.
    if (v.is_object() && v.contains("connected") && v["connected"].is_null()) {
      std::string owner = field_text(v, "served_by");
      notes += owner.empty() || owner == "-"
                   ? fmt::format("{}: no backupd serves it right now (being taken over)\n", name)
                   : fmt::format("{}: served by backupd {}\n", name, owner);
    }
  }
  std::string out = table.render();
  if (!notes.empty()) out += "\n" + notes;
  return out;
}

std::string render_runs(const Json& runs) {
  Table table(
      {"STARTED", "STATUS", "SNAPSHOT", "SIZE", "DURATION", "CHANGED", "ERROR/WARNING"},
      {Align::kLeft, Align::kLeft, Align::kLeft, Align::kRight, Align::kRight, Align::kRight});
  for (const Json& r : runs) {
    std::string status = field_text(r, "status");
    bool has_snapshot = member(r, "snapshot") != nullptr;
    std::string error = member(r, "error") != nullptr ? field_text(r, "error") : "";
    if (member(r, "warnings") != nullptr) {
      status += " with warnings";
      error = field_text(r, "warnings");
    }
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

std::string render_verifies(const Json& verifies) {
  Table table({"VERIFIED", "RESULT", "CHECKED", "DIFFERENCES", "DURATION", "SUMMARY"},
              {Align::kLeft, Align::kLeft, Align::kLeft, Align::kRight, Align::kRight});
  for (const Json& v : verifies) {
    table.add({time_field(v, "started_at"), "verify " + field_text(v, "result"),
               field_text(v, "checked"), std::to_string(field_u64(v, "differences")),
               human_duration_ms(field_u64(v, "duration_ms")), field_text(v, "summary")});
  }
  return table.render();
}

std::string progress_bar(int percent, size_t width) {
  percent = std::clamp(percent, 0, 100);
  size_t filled = width * static_cast<size_t>(percent) / 100;
  return fmt::format("[{}{}] {:>3}%", std::string(filled, '#'), std::string(width - filled, '-'),
                     percent);
}

std::string render_status(const Json& volumes) {
  std::string out;
  for (const Json& s : volumes) {
    if (!out.empty()) out += '\n';
    out += volume_name(field_text(s, "host"), field_text(s, "path")) + '\n';
    auto lines = status_lines(s);
    size_t width = 0;
    for (const auto& [label, text] : lines) width = std::max(width, label.size());
    for (const auto& [label, text] : lines) {
      out += fmt::format("  {:<{}}  {}\n", label, width, text);
    }
  }
  return out;
}

std::string render_peers(const Json& peers) {
  Table table({"ID", "NAME", "ADDED"});
  for (const Json& p : peers) {
    table.add({field_text(p, "id"), field_text(p, "name"), time_field(p, "added_at")});
  }
  return table.render();
}

std::string render_pending(const Json& pending) {
  Table table({"ID", "NAME", "FROM", "LAST SEEN", "ATTEMPTS"},
              {Align::kLeft, Align::kLeft, Align::kLeft, Align::kLeft, Align::kRight});
  for (const Json& p : pending) {
    table.add({field_text(p, "id"), field_text(p, "name"), field_text(p, "address"),
               time_field(p, "last_seen_at"), field_text(p, "attempts")});
  }
  return "replicas waiting for authorisation:\n" + table.render();
}

std::string render_snapshots(const Json& snapshots) {
  Table table({"ID", "CREATED", "SIZE", "HELD BY"}, {Align::kLeft, Align::kLeft, Align::kRight});
  for (const Json& s : snapshots) {
    std::vector<std::string> holders;
    if (const Json* h = member(s, "holders"); h != nullptr && h->is_array()) {
      for (const Json& name : *h) holders.push_back(name.is_string() ? name.get<std::string>() : "?");
    }
    table.add({field_text(s, "id"), time_field(s, "created_at"),
               member(s, "bytes") != nullptr ? human_size(field_u64(s, "bytes")) : "-",
               holders.empty() ? "-" : fmt::format("{}", fmt::join(holders, ", "))});
  }
  return table.render();
}

}  // namespace bkp::tools
