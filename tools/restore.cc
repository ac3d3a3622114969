// Restore: choose the snapshot and its sources, fetch it in parts from all of them at once
// (tools/part_fetch.h) and extract it as the parts arrive (tools/extract.h).
//
// Planning asks each candidate source for the archive's header only (a restore request for 0
// bytes at offset 0: size, part digests and, from backupd, the replicators holding a copy).
// Without --from the candidates are backupd and the replicators it names; if backupd cannot be
// reached, the replicators remembered from earlier answers (tools/restore_sources.h). With
// --from, exactly the sources listed. "latest" is backupd's latest when backupd answers, else
// the newest snapshot any source holds; a source holding another archive under that id (other
// size or digests) is left out with a warning.
//
// --live restores the tree as it is now, from one source: backupd runs the volume and its new
// (or unchanged latest) snapshot is restored; when backupd cannot be reached, a replicator
// archives its own copy of the tree for the connection (replicator/live_archive.h).
#include "tools/restore.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <thread>

#include "common/files.h"
#include "common/log.h"
#include "common/part_digests.h"
#include "common/progress.h"
#include "tools/extract.h"
#include "tools/format.h"
#include "tools/part_fetch.h"
#include "tools/restore_sources.h"
#include "tools/views.h"

namespace bkp::tools {
namespace {

// A candidate that answered the plan request, still connected for the fetch.
struct Planned {
  ServerAddress address;
  std::unique_ptr<ControlClient> client;
  Json header;
  std::string id;  // the snapshot it answered with
};

// The name a source goes by in the progress line and the report.
std::string source_name(const ServerAddress& a) {
  if (a.role.starts_with("replica ")) return a.role.substr(8);
  return a.role == "backupd" ? a.role : a.text;
}

Json plan_request(Json request) {
  request["offset"] = 0;
  request["length"] = 0;
  return request;
}

// Connects to address and asks for the header of the snapshot the request names.
Outcome<Planned> plan_one(const ServerAddress& address, const Json& request) {
  Planned p{address, BKP_TRY(ControlClient::connect(address)), {}, {}};
  p.header = BKP_TRY(p.client->call(plan_request(request)));
  Json done = BKP_TRY(p.client->next_response());
  auto size = p.header.find("bytes");
  const Json& snapshot = p.header.contains("snapshot") ? p.header["snapshot"] : Json();
  if (size == p.header.end() || !size->is_number_unsigned() || !snapshot.is_object() ||
      field_text(snapshot, "id").empty() || !done.contains("done")) {
    return fail_with(Exit::kFailure, kCodeProtocol,
                     fmt::format("restore answer from {} at {} has no snapshot id or byte count",
                                 address.role, address.text));
  }
  p.id = field_text(snapshot, "id");
  // A replicator lists itself as the one holder: the name for a source given by address.
  const Json& holders = snapshot.contains("holders") ? snapshot["holders"] : Json();
  if (p.address.role == "source" && holders.is_array() && holders.size() == 1 &&
      holders[0].is_string()) {
    p.address.role = "replica " + holders[0].get<std::string>();
  }
  return p;
}

// plan_one for every address at once (a dead source costs one connect timeout, not one each).
std::vector<Outcome<Planned>> plan_all(const std::vector<ServerAddress>& addresses,
                                       const Json& request) {
  std::vector<std::optional<Outcome<Planned>>> slots(addresses.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < addresses.size(); ++i) {
    threads.emplace_back([&, i] { slots[i] = plan_one(addresses[i], request); });
  }
  for (auto& t : threads) t.join();
  std::vector<Outcome<Planned>> out;
  for (auto& s : slots) out.push_back(std::move(*s));
  return out;
}

// The "digests" of a header (64 hex digits per part), when present and one per part of an
// archive of `bytes`; empty otherwise (nothing is checked then).
std::vector<PartDigest> digests_of(const Json& header, uint64_t bytes, uint64_t part_size) {
  std::vector<PartDigest> out;
  auto it = header.find("digests");
  if (it == header.end() || !it->is_string()) return out;
  const std::string& hex = it->get_ref<const std::string&>();
  if (hex.size() != part_count(bytes, part_size) * 64) return out;
  for (size_t at = 0; at < hex.size(); at += 64) {
    auto d = digest_from_hex(std::string_view(hex).substr(at, 64));
    if (!d) return {};
    out.push_back(*d);
  }
  return out;
}

uint64_t part_size_of(const Json& header) {
  const Json& snapshot = header["snapshot"];
  auto it = snapshot.find("part_size");
  if (it == snapshot.end() || !it->is_number_unsigned() || it->get<uint64_t>() == 0) {
    return kPartSize;
  }
  return it->get<uint64_t>();
}

// The candidates that answered, and the first failure (what is reported if none did).
struct Round {
  std::vector<Planned> planned;
  std::optional<Failure> first_failure;
};

void collect(std::vector<Outcome<Planned>> answers, const std::vector<ServerAddress>& from,
             Round& round, std::vector<std::string>& warnings) {
  for (size_t i = 0; i < answers.size(); ++i) {
    if (answers[i]) {
      round.planned.push_back(std::move(*answers[i]));
      continue;
    }
    if (!round.first_failure) round.first_failure = answers[i].error();
    warnings.push_back(fmt::format("not restoring from {}: {}", source_name(from[i]),
                                   answers[i].error().message));
  }
}

std::vector<ServerAddress> addresses_of(const std::vector<KnownSource>& sources,
                                        const ServerAddress& server) {
  std::vector<ServerAddress> out;
  for (const auto& s : sources) out.push_back(source_address(s, server));
  return out;
}

// The restore sources remembered beside bkptool's identity (none without one).
struct Remembered {
  std::string file;
  std::vector<KnownSource> known;
};
Remembered remembered(const ServerAddress& server) {
  if (server.identity_path.empty()) return {};
  std::string file = remembered_sources_path(server.identity_path);
  auto known = load_remembered(file);
  return {std::move(file), std::move(known)};
}

// Plans every candidate and keeps those holding the same archive as the reference.
Outcome<Round> plan(const Invocation& inv, const ServerAddress& server, const Json& request,
                    std::vector<std::string>& warnings) {
  const auto [remembered_file, known] = remembered(server);
  Round round;
  if (!inv.from.empty()) {
    auto from = BKP_TRY(parse_from(inv.from, server, known));
    collect(plan_all(from, request), from, round, warnings);
  } else {
    auto first = plan_one(server, request);
    if (first) {
      auto learned = sources_from_answer(first->header);
      if (!remembered_file.empty() && !learned.empty()) {
        if (auto kept = remember(remembered_file, learned); !kept) {
          log::warn("cannot remember the restore sources in {}: {}", remembered_file,
                    kept.error().message);
        }
      }
      Json exact = request;
      exact["snapshot"] = first->id;
      round.planned.push_back(std::move(*first));
      auto others = addresses_of(learned, server);
      collect(plan_all(others, exact), others, round, warnings);
    } else if (first.error().exit == Exit::kUnreachable && !known.empty()) {
      warnings.push_back(fmt::format("{}; restoring from the {} remembered in {}",
                                     first.error().message,
                                     counted(known.size(), "replicator", "replicators"),
                                     remembered_file));
      auto others = addresses_of(known, server);
      collect(plan_all(others, request), others, round, warnings);
    } else {
      return tl::unexpected(first.error());
    }
  }
  if (round.planned.empty()) return tl::unexpected(*round.first_failure);

  // The reference: backupd's answer, else the newest snapshot any source holds.
  auto ref = std::find_if(round.planned.begin(), round.planned.end(),
                          [](const Planned& p) { return p.address.role == "backupd"; });
  if (ref == round.planned.end()) {
    ref = std::max_element(round.planned.begin(), round.planned.end(),
                           [](const Planned& a, const Planned& b) { return a.id < b.id; });
  }
  std::iter_swap(round.planned.begin(), ref);
  const std::string id = round.planned.front().id;
  const std::string ref_name = source_name(round.planned.front().address);
  const Json bytes = round.planned.front().header["bytes"];
  const std::string digests = round.planned.front().header.value("digests", "");
  std::vector<Planned> kept;
  for (size_t i = 0; i < round.planned.size(); ++i) {
    Planned& p = round.planned[i];
    if (p.id != id) {  // another "latest": ask that source for the reference's
      Json exact = request;
      exact["snapshot"] = id;
      auto again = plan_one(p.address, exact);
      if (!again) {
        warnings.push_back(fmt::format("not restoring from {}: {}", source_name(p.address),
                                       again.error().message));
        continue;
      }
      p = std::move(*again);
    }
    if (i > 0 && (p.header["bytes"] != bytes || p.header.value("digests", "") != digests)) {
      warnings.push_back(fmt::format("not restoring from {}: its snapshot {} is not the same "
                                     "archive as {}'s (size or part digests differ)",
                                     source_name(p.address), id, ref_name));
      continue;
    }
    kept.push_back(std::move(p));
  }
  round.planned = std::move(kept);
  return round;
}

// --live from backupd: it runs the volume now; the restore is of that run's snapshot, or of the
// latest when nothing changed since (it is the tree as it is). From backupd alone: the replicas
// receive the new snapshot only later.
Outcome<Planned> live_from_backupd(const Invocation& inv, const ServerAddress& address,
                                   Json request, std::vector<std::string>& messages) {
  auto client = BKP_TRY(ControlClient::connect(address));
  log::info("backupd takes a snapshot of {} as it is now", volume_name(inv.host, inv.path));
  Json answer = BKP_TRY(client->call(
      Json{{"cmd", "run"}, {"host", inv.host}, {"path", inv.path}}, kRunTimeoutMs));
  const Json& run = answer.contains("run") ? answer["run"] : Json();
  const std::string status = field_text(run, "status");
  if (status == "written") {
    request["snapshot"] = field_text(run, "snapshot");
    messages.push_back(fmt::format("the live tree: snapshot {} taken now",
                                   field_text(run, "snapshot")));
  } else if (status == "unchanged") {
    request["snapshot"] = "latest";
    messages.push_back("the live tree: unchanged since the latest snapshot, which is restored");
  } else {
    return fail_with(Exit::kFailure, "run_failed",
                     fmt::format("the snapshot of the live tree of {} failed: {}",
                                 volume_name(inv.host, inv.path), field_text(run, "error")));
  }
  return plan_one(address, request);
}

// --live from a replicator: it archives its copy of the tree for this connection
// (replicator/live_archive.h), which works while backupd is away.
Outcome<Planned> live_from_replica(const ServerAddress& address, Json request,
                                   std::vector<std::string>& messages) {
  request["live"] = true;
  Planned p = BKP_TRY(plan_one(address, request));
  messages.push_back(fmt::format("the live tree of replica {}: archived now as {}",
                                 source_name(p.address), p.id));
  return p;
}

// --live: the first source that can give the live tree: backupd, or (backupd unreachable) the
// remembered replicators in turn; with --from, its entries in turn. One source: a live archive
// exists on its source alone.
Outcome<Round> plan_live(const Invocation& inv, const ServerAddress& server, const Json& request,
                         std::vector<std::string>& warnings, std::vector<std::string>& messages) {
  const auto [remembered_file, known] = remembered(server);
  std::vector<ServerAddress> candidates{server};
  if (!inv.from.empty()) candidates = BKP_TRY(parse_from(inv.from, server, known));
  std::optional<Failure> first_failure;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const ServerAddress address = candidates[i];
    auto p = address.role == "backupd" ? live_from_backupd(inv, address, request, messages)
                                       : live_from_replica(address, request, messages);
    if (p) {
      Round round;
      round.planned.push_back(std::move(*p));
      return round;
    }
    if (!first_failure) first_failure = p.error();
    if (inv.from.empty() && i == 0 && p.error().exit == Exit::kUnreachable && !known.empty()) {
      warnings.push_back(fmt::format("{}; the live tree comes from a replicator remembered in {}",
                                     p.error().message, remembered_file));
      for (const auto& a : addresses_of(known, server)) candidates.push_back(a);
    } else {
      warnings.push_back(fmt::format("no live tree from {}: {}", source_name(address),
                                     p.error().message));
    }
  }
  return tl::unexpected(*first_failure);
}

}  // namespace

Outcome<Report> run_restore(const Invocation& inv, const ServerAddress& server,
                            const Json& request) {
  std::vector<std::string> warnings, live_messages;
  Round round = BKP_TRY(inv.live ? plan_live(inv, server, request, warnings, live_messages)
                                 : plan(inv, server, request, warnings));
  const Json& header = round.planned.front().header;
  const Json snapshot = header["snapshot"];
  FetchPlan fetch;
  fetch.request = request;
  fetch.snapshot_id = round.planned.front().id;
  fetch.request["snapshot"] = fetch.snapshot_id;
  fetch.bytes = header["bytes"].get<uint64_t>();
  fetch.part_size = part_size_of(header);
  fetch.digests = digests_of(header, fetch.bytes, fetch.part_size);

  if (auto made = make_dirs(inv.to); !made) {
    return tl::unexpected(failure_from(made.error(), Exit::kFailure, kCodeLocal));
  }
  std::vector<FetchSource> sources;
  std::string names;
  for (auto& p : round.planned) {
    sources.push_back(FetchSource{source_name(p.address), std::move(p.client)});
    names += (names.empty() ? "" : ", ") + sources.back().name;
  }
  // Progress of the download (compressed bytes) and the entry being written: a bar on a
  // terminal, a line every 10 s otherwise; nothing with -q.
  auto meter = std::make_shared<progress::Meter>(fmt::format(
      "{} snapshot {} from {}", volume_name(inv.host, inv.path), fetch.snapshot_id, names));
  std::optional<progress::Display> display;
  if (log::enabled(log::Level::kInfo)) {
    display.emplace(progress::display_options(std::chrono::seconds(10)));
    display->add(meter);
    display->start();
  }
  PartFetcher fetcher(fetch, std::move(sources), *meter);
  auto stats = extract_archive(fetcher, inv.to, meter.get());
  fetcher.stop();
  if (display) display->stop();
  if (!stats) {
    if (fetcher.failure()) return tl::unexpected(*fetcher.failure());
    return fail_with(Exit::kFailure, kCodeLocal,
                     fmt::format("restore into {}: {}", inv.to, stats.error().message));
  }

  Json used = Json::array();
  std::string shares;
  for (const SourceTally& t : fetcher.tallies()) {
    used.push_back(Json{{"name", t.name}, {"parts", t.parts}, {"bytes", t.bytes},
                        {"bad_parts", t.bad_parts}, {"lost", t.lost}});
    shares += fmt::format("{}{} {}", shares.empty() ? "" : ", ", t.name, human_size(t.bytes));
    if (t.bad_parts > 0) {
      warnings.push_back(fmt::format("{} sent {} that did not match the digest (fetched elsewhere)",
                                     t.name, counted(t.bad_parts, "part", "parts")));
    }
    if (!t.lost.empty()) {
      warnings.push_back(fmt::format("{} stopped serving mid-restore ({}); the others took over",
                                     t.name, t.lost));
    }
  }
  Report r;
  r.messages = std::move(live_messages);
  r.json = Json{{"ok", true},           {"snapshot", snapshot}, {"files", stats->files},
                {"bytes", stats->bytes}, {"sources", used}};
  r.messages.push_back(fmt::format(
      "restored {} and {} ({}) of {} from snapshot {} into {} (from {})",
      counted(stats->files, "file", "files"), counted(stats->dirs, "directory", "directories"),
      human_size(stats->bytes), volume_name(inv.host, inv.path), fetch.snapshot_id, inv.to,
      shares));
  if (!stats->owners_restored) {
    warnings.push_back(
        "not running as root: the restored files belong to you, not to their original owners");
  }
  warnings.insert(warnings.end(), stats->first_warnings.begin(), stats->first_warnings.end());
  if (stats->warnings > stats->first_warnings.size()) {
    warnings.push_back(
        fmt::format("... and {} more warnings", stats->warnings - stats->first_warnings.size()));
  }
  r.warnings = std::move(warnings);
  return r;
}

}  // namespace bkp::tools
