// backupd's web side (issue 14): a live status page, the same data as JSON, and Prometheus
// metrics, all read-only, on the `http_listen` address (default 127.0.0.1:7780).
//
//   /             the status page (server/web_page.html, built in): every volume with its
//                 recovery point, a bar per copy, the last ten runs, plots of snapshot sizes and
//                 run durations; it polls /api/status every 2 s, no reload, no external asset
//   /api/status   {"generated_at", "server", "volumes": [STATUS + "copies" + "recent_runs"]}
//   /metrics      Prometheus text exposition (README "Metrics" lists the names)
//
// Every answer is built from the same views `bkptool status` reads (Registry::status, the
// catalog, each volume's stats file), without taking a volume's mutex, so a busy ingest never
// delays a scrape and a scrape never delays the ingest.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/net/http_server.h"
#include "server/registry.h"

namespace bkp::server {

// The /api/status document at now_ms; started_ms: when backupd started.
nlohmann::json status_document(Registry& registry, int64_t now_ms, int64_t started_ms);
// The /metrics text at now_ms; state_dir: backupd's, whose filesystem's room it reports.
std::string metrics_text(Registry& registry, int64_t now_ms, const std::string& state_dir);

// Serves the three endpoints on where until destroyed; *bound: the address it listens on.
Result<std::unique_ptr<net::HttpServer>> start_web(const net::HostPort& where, Registry& registry,
                                                   int64_t started_ms, const std::string& state_dir,
                                                   net::HostPort* bound);

}  // namespace bkp::server
