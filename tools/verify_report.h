// `bkptool verify`: what its answer looks like to a person, and the exit status it gives
// (0 clean, 10 differences found, 1 something could not be checked; docs/PROTOCOL.md).
#pragma once

#include "tools/commands.h"

namespace bkp::tools {

// The most differences printed per copy; --json has them all (up to the server's cap).
constexpr size_t kMaxPrintedDifferences = 20;

Report present_verify(const Json& request, const Json& response);

}  // namespace bkp::tools
