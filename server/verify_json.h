// JSON shapes of `verify` (docs/PROTOCOL.md "Control"): the VERIFY answer and the VERIFY_RUN
// objects `history` lists beside the runs.
#pragma once

#include "server/control_json.h"
#include "server/verify.h"

namespace bkp::server {

// The most differences listed per copy in an answer (a response is one frame); each copy says
// how many it found in all ("differences_total").
constexpr size_t kMaxListedDifferences = 200;

// {"ok": true, "host", "path", "result", "checked", "differences", "summary", "started_at",
//  "duration_ms", "copies": [{"kind", "name", "checked", "error", "entries", "differences_total",
//  "changed_during", "differences": [{"path", "what", "detail"}]}]}
json verify_json(const VerifyReport& report);
// {"id", "started_at", "ended_at", "duration_ms", "result", "checked", "differences", "summary"}
json verify_run_json(const VerifyRecord& run);

}  // namespace bkp::server
