// The verify answer and history rows as JSON (see verify_json.h).
#include "server/verify_json.h"

namespace bkp::server {

json verify_run_json(const VerifyRecord& run) {
  return json{{"id", run.id},
              {"started_at", iso_time(run.started_at)},
              {"ended_at", iso_time(run.ended_at)},
              {"duration_ms", run.ended_at - run.started_at},
              {"result", verify_result_name(run.result)},
              {"checked", run.checked},
              {"differences", run.differences},
              {"summary", run.summary}};
}

json verify_json(const VerifyReport& report) {
  json copies = json::array();
  for (const auto& c : report.copies) {
    json differences = json::array();
    for (size_t i = 0; i < c.differences.size() && i < kMaxListedDifferences; ++i) {
      const Difference& d = c.differences[i];
      differences.push_back(json{{"path", d.path}, {"what", d.what}, {"detail", d.detail}});
    }
    copies.push_back(json{{"kind", copy_kind_name(c.kind)},
                          {"name", c.name},
                          {"checked", c.error.empty()},
                          {"error", c.error.empty() ? json(nullptr) : json(c.error)},
                          {"entries", c.entries},
                          {"differences_total", c.differences.size()},
                          {"changed_during", c.changed},
                          {"differences", std::move(differences)}});
  }
  json out = verify_run_json(report.record);
  out.erase("id");
  out["ok"] = true;
  out["host"] = report.record.host;
  out["path"] = report.record.path;
  out["copies"] = std::move(copies);
  return out;
}

}  // namespace bkp::server
