// STATE/stats.json (stats_file.h).
#include "common/stats_file.h"

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "common/clock.h"
#include "common/files.h"
#include "common/log.h"

namespace bkp {
namespace {

using json = nlohmann::json;

// base + add, numbers summed key by key; what only one side has is kept as it is.
json add_totals(const json& base, const json& add) {
  if (base.is_number() && add.is_number()) {
    if (base.is_number_float() || add.is_number_float()) {
      return base.get<double>() + add.get<double>();
    }
    return base.get<uint64_t>() + add.get<uint64_t>();
  }
  if (base.is_object() && add.is_object()) {
    json out = base;
    for (const auto& [key, value] : add.items()) {
      out[key] = out.contains(key) ? add_totals(out[key], value) : value;
    }
    return out;
  }
  return add;
}

}  // namespace

std::chrono::milliseconds StatsFile::every() {
  const char* text = std::getenv("BKP_TEST_STATS_EVERY_MS");
  unsigned ms = 0;
  if (text != nullptr &&
      std::from_chars(text, text + std::strlen(text), ms).ec == std::errc() && ms > 0) {
    return std::chrono::milliseconds(ms);
  }
  return std::chrono::minutes(1);
}

StatsFile::StatsFile(std::string path, std::string daemon)
    : path_(std::move(path)),
      daemon_(std::move(daemon)),
      base_(json::object()),
      started_ms_(wall_ms()),
      last_(std::chrono::steady_clock::now()) {
  std::ifstream in(path_);
  if (!in) return;
  json previous = json::parse(in, nullptr, false);
  if (previous.is_object() && previous.contains("since_install") &&
      previous["since_install"].is_object()) {
    base_ = previous["since_install"];
  } else {
    log::warn("{}: not a stats file; the totals since install start again", path_);
  }
}

Result<void> StatsFile::write(const json& since_start, const json& now) {
  const int64_t t = wall_ms();
  json doc{{"daemon", daemon_},
           {"written_at", iso_time(t)},
           {"started_at", iso_time(started_ms_)},
           {"uptime_seconds", (t - started_ms_) / 1000},
           {"since_start", since_start},
           {"since_install", add_totals(base_, since_start)},
           {"now", now}};
  last_ = std::chrono::steady_clock::now();
  return write_file_atomic(path_, doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n",
                           Durability::kNoSync);
}

}  // namespace bkp
