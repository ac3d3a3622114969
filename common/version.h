// The one `--version` text of every binary (backupd, backupfs, replicator, bkptool), so a bug
// report names the same build whichever program printed it.
#pragma once

#include <string>
#include <string_view>

namespace bkp {

// "NAME VERSION (git COMMIT)": VERSION is CMake's project() version; COMMIT is the abbreviated
// commit the build was configured from, and the parenthesis is left out when the source was not
// a git checkout.
std::string version_text(std::string_view program);

// The same text from explicit parts (what version_text() uses; unit-tested).
std::string format_version(std::string_view program, std::string_view version,
                           std::string_view commit);

}  // namespace bkp
