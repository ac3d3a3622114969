// The human (non --json) views of backupd's answers: one table per list the control protocol
// returns (docs/PROTOCOL.md: VOLUME, RUN, SNAPSHOT objects). Tolerant by design: a missing or
// null field shows as "-", an unexpected type as its JSON text, so an older or newer server
// still gets a readable table rather than an error.
#pragma once

#include <string>
#include <string_view>

#include "tools/json.h"

namespace bkp::tools {

// "web1:/srv/app": how bkptool names a volume in messages.
std::string volume_name(std::string_view host, std::string_view path);

// The "volumes" array of a list response: HOST PORT PATH EVERY LINK LAST RUN STATUS NEXT RUN
// LAG, then one "HOST:PATH: last error: ..." line per volume that has a last_error.
std::string render_volumes(const Json& volumes);

// The "runs" array of a history response, newest first as received:
// STARTED STATUS SNAPSHOT SIZE DURATION CHANGED ERROR.
std::string render_runs(const Json& runs);

// The "snapshots" array: ID CREATED SIZE.
std::string render_snapshots(const Json& snapshots);

// Field access that never throws: the string value, a number or bool as text, "-" for a
// missing or null field.
std::string field_text(const Json& object, const char* key);
// An unsigned number field; 0 when missing, null, negative or not a number.
uint64_t field_u64(const Json& object, const char* key);

}  // namespace bkp::tools
