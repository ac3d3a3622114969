// Volume-relative path rules, enforced on everything a peer names (DESIGN.md invariant 7).
//
// A valid relative path is "" (the volume root) or components joined by single '/', each
// component non-empty, not "." or "..", without NUL, no leading or trailing '/'. Appliers then
// resolve such paths with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so even a valid path
// cannot leave the volume through a symlink.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace bkp {

// EINVAL with a message naming the problem ("path component '..' is not allowed").
Result<void> validate_rel_path(std::string_view path);

// An absolute volume path as an operator types it ("/srv/app"): absolute, no "."/".." or empty
// components, no trailing '/', no NUL. Returns it unchanged or an EINVAL error.
Result<std::string> validate_volume_path(std::string_view path);

// Host names: 1..253 chars of [A-Za-z0-9.-_], not starting with '.' or '-'.
Result<void> validate_host(std::string_view host);

// A snapshot id as backupd names its archives, "20261126T010203.123Z" (the file is id + ".tgz"):
// exactly that shape, so a peer's id can name a file. EINVAL naming it otherwise.
Result<void> validate_snapshot_id(std::string_view id);

// "a/b/c" -> parent "a/b", name "c"; "c" -> parent "", name "c".
std::string_view parent_of(std::string_view rel);
std::string_view base_of(std::string_view rel);
// Joins a relative parent and a name; "" + "x" = "x".
std::string join_rel(std::string_view parent, std::string_view name);

// systemd-style escaping of an absolute path for use as one directory name:
// "/srv/my-app" -> "srv-my\x2dapp". Injective, reversible.
std::string escape_path(std::string_view abs_path);

}  // namespace bkp
