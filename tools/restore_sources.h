// Where `bkptool restore` may fetch a snapshot besides backupd: the replicators that serve
// their snapshot copies (replicator --listen). backupd names them in its restore answer (with
// the address and identity each reported); bkptool remembers them in a file so that a restore
// still finds them when backupd is down, and `--from` names sources explicitly.
//
// The remembered file is sources.json beside bkptool's identity (~/.config/bkptool/): written
// by bkptool only, replaced atomically, one entry per replicator name.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tools/failure.h"
#include "tools/json.h"
#include "tools/settings.h"

namespace bkp::tools {

// A replicator serving restores: its name, "ADDR:PORT" and identity (canonical).
struct KnownSource {
  std::string name;
  std::string address;
  std::string id;
  bool operator==(const KnownSource&) const = default;
};

// sources.json in the directory of identity_path.
std::string remembered_sources_path(const std::string& identity_path);

// The remembered sources; none when the file is missing. A file that does not parse, or an
// entry that is not well formed, is skipped with a warning (it only ever adds sources).
std::vector<KnownSource> load_remembered(const std::string& file);

// Adds or replaces (by name) the learned sources in the file.
Result<void> remember(const std::string& file, const std::vector<KnownSource>& learned);

// The well-formed entries of a restore answer's "sources" array.
std::vector<KnownSource> sources_from_answer(const Json& header);

// How bkptool reaches a known source: TCP with TLS, its identity pinned, bkptool's identity
// taken from server (the backupd address the command resolved).
ServerAddress source_address(const KnownSource& source, const ServerAddress& server);

// --from LIST: comma-separated [ID@]ADDR:PORT, or a control socket path. An entry without ID
// takes the identity remembered for that address, or the pinned backupd identity when it is
// backupd's address. A usage Failure names an entry that does not parse or whose identity is
// unknown.
Outcome<std::vector<ServerAddress>> parse_from(std::string_view list, const ServerAddress& server,
                                               const std::vector<KnownSource>& known);

}  // namespace bkp::tools
