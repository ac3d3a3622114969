// version_text(): the build's version and commit come from CMake at configure time
// (common/CMakeLists.txt defines BKP_VERSION and BKP_GIT_COMMIT for this file alone), so a new
// commit recompiles one file, not the tree; no network and no git at run time.
#include "common/version.h"

#include <fmt/format.h>

#ifndef BKP_VERSION
#error "BKP_VERSION must be defined by the build (common/CMakeLists.txt)"
#endif
#ifndef BKP_GIT_COMMIT
#define BKP_GIT_COMMIT ""
#endif

namespace bkp {

std::string format_version(std::string_view program, std::string_view version,
                           std::string_view commit) {
  if (commit.empty()) return fmt::format("{} {}", program, version);
  return fmt::format("{} {} (git {})", program, version, commit);
}

std::string version_text(std::string_view program) {
  return format_version(program, BKP_VERSION, BKP_GIT_COMMIT);
}

}  // namespace bkp
