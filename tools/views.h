// The human (non --json) views of backupd's answers: one table per list the control protocol
// returns (docs/PROTOCOL.md: VOLUME, RUN, SNAPSHOT objects) and one block per STATUS object.
// Tolerant by design: a missing or null field shows as "-", an unexpected type as its JSON
// text, so an older or newer server still gets a readable view rather than an error.
#pragma once

#include <string>
#include <string_view>

#include "tools/json.h"

namespace bkp::tools {

// "web1:/srv/app": how bkptool names a volume in messages.
std::string volume_name(std::string_view host, std::string_view path);

// Where backupd reaches a volume's node, from a VOLUME object (or a register request): its
// "address" and "port", as "127.0.0.1:7701" or "[::1]:7701".
std::string node_address(const Json& object);

// The "volumes" array of a list response: HOST NODE PATH EVERY LINK LAST RUN STATUS NEXT RUN
// LAG COPIES (HOST is the volume's name, NODE where backupd reaches it; COPIES current of
// wanted), then one "HOST:PATH: last error: ..." line per volume that has a last_error and one
// per under-replicated volume with its copies.
std::string render_volumes(const Json& volumes);

// A VOLUME's copies: "2 of 3 current: mirror current, r1 current, r2 missing", with
// "; UNDER-REPLICATED" when fewer are current than wanted.
std::string copies_text(const Json& volume);
// Whether any volume of a list or status response is under-replicated.
bool any_under_replicated(const Json& response);

// A status response's "replicators": NAME LINK HOLDS FREE ROUND TRIP COPIES.
std::string render_replicators(const Json& replicators);

// The "runs" array of a history response, newest first as received:
// STARTED STATUS SNAPSHOT SIZE DURATION CHANGED ERROR.
std::string render_runs(const Json& runs);
// The VERIFY_RUN objects of `history` ("verifies"): one row each, newest first.
std::string render_verifies(const Json& verifies);

// The "snapshots" array: ID CREATED SIZE HELD BY (backupd and the replicas with a copy).
std::string render_snapshots(const Json& snapshots);

// The "volumes" array of a status response: one block per volume, blocks separated by a blank
// line: the node link (and its last error), the lag, the file the node is shipping, the ingest
// transfer with a bar, the copies and their states, one line per replica placed with its lag and
// last error (and a bar while it catches up), the last snapshot and the next run.
std::string render_status(const Json& volumes);

// The "replicas" or "operators" array of a replica_list / operator_list response (PEER objects):
// ID NAME ADDED.
std::string render_peers(const Json& peers);

// Replicators refused lately (PENDING objects: a replica_list's "pending", a status response's
// "pending_replicas"): a "replicas waiting for authorisation:" line, then ID NAME FROM LAST SEEN
// ATTEMPTS.
std::string render_pending(const Json& pending);

// A text progress bar: "[#####---------------]  25%" for width 20. percent is clamped to
// 0..100; the percentage is right-aligned to three digits so a redrawn bar does not jitter.
std::string progress_bar(int percent, size_t width = 20);

// Field access that never throws: the string value, a number or bool as text, "-" for a
// missing or null field.
std::string field_text(const Json& object, const char* key);
// An unsigned number field; 0 when missing, null, negative or not a number.
uint64_t field_u64(const Json& object, const char* key);

}  // namespace bkp::tools
