// Failure: how every bkptool command fails, and the exit code a script sees.
//
// Lower layers (sockets, files, libarchive) return Result<T> with an errno-style Error. A
// command needs more than an errno: the exit code (docs/PROTOCOL.md, "Control") and the
// machine-readable code that --json prints. Failure carries both, and Outcome<T> is Result's
// twin for code that already knows which exit applies.
#pragma once

#include <string>
#include <string_view>
#include <tl/expected.hpp>

#include "common/result.h"

namespace bkp::tools {

// Process exit codes. 0..10 are the table in docs/PROTOCOL.md; 78 is EX_CONFIG as in backupd.
enum class Exit : int {
  kOk = 0,
  kFailure = 1,          // anything else: server-side internal error, local I/O, protocol
  kUsage = 2,            // bad arguments, or a bad_request answer
  kUnreachable = 3,      // backupd cannot be reached
  kUnknownVolume = 4,    // unknown_volume, unknown_peer
  kDuplicate = 5,        // duplicate
  kNodeUnreachable = 6,  // node_unreachable or wrong_path
  kNoSnapshot = 7,       // no_snapshot
  kWrongIdentity = 8,    // wrong_identity, or backupd is not the pinned --server-id
  kUnderReplicated = 9,  // status HOST PATH answered: the volume has fewer current copies than it wants
  kDiffers = 10,         // verify found a copy that differs from what it was made from
  kConfig = 78,          // a bad bkptool.toml; the message names the file and key
};

// Codes bkptool uses for failures it detects itself (the server's codes are passed through).
inline constexpr std::string_view kCodeUsage = "usage";
inline constexpr std::string_view kCodeUnreachable = "server_unreachable";
inline constexpr std::string_view kCodeConfig = "config";
inline constexpr std::string_view kCodeProtocol = "protocol";
inline constexpr std::string_view kCodeLocal = "local";
inline constexpr std::string_view kCodeInternal = "internal";
inline constexpr std::string_view kCodeWrongServer = "wrong_server";
inline constexpr std::string_view kCodeNotAuthorised = "not_authorised";

struct Failure {
  Exit exit = Exit::kFailure;
  std::string code;     // "unknown_volume", "usage", ...: what --json prints as "code"
  std::string message;  // one sentence without the "bkptool: " prefix
};

template <class T>
using Outcome = tl::expected<T, Failure>;

inline tl::unexpected<Failure> fail_with(Exit exit, std::string_view code, std::string message) {
  return tl::unexpected<Failure>(Failure{exit, std::string(code), std::move(message)});
}

// A lower-layer Error as a Failure with the given exit and code.
inline Failure failure_from(const Error& error, Exit exit, std::string_view code) {
  return Failure{exit, std::string(code), error.message};
}

// The exit code for a server error code ("unknown_volume" -> kUnknownVolume). Codes this
// version does not know map to kFailure, so a newer server cannot make bkptool exit 0.
Exit exit_for_code(std::string_view code);

// The part of `bkptool --help` after the options: the exit codes and where the server address
// comes from.
const char* help_footer();

// The numeric exit status.
inline int exit_status(Exit exit) { return static_cast<int>(exit); }

}  // namespace bkp::tools
