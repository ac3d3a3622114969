// TempDir: a scratch directory for one test, removed when the test ends.
//
// Removal is refused while anything is mounted at or below the directory: a recursive delete
// through a live FUSE mount would delete the files behind it (and through a bind mount, files
// outside the test). The refusal is printed so a leaked mount is visible in the test output.
// BKP_KEEP_TEST_DIRS=1 keeps every directory for post-mortem inspection.
#pragma once

#include <string>
#include <string_view>

namespace bkp::testutil {

class TempDir {
 public:
  // Creates <base>/<prefix>-XXXXXX, base = $BKP_TEST_TMPDIR, else $TMPDIR, else /tmp, with
  // symlinks resolved so the path equals what /proc/self/mountinfo shows. Throws on failure.
  explicit TempDir(std::string_view prefix = "bkp-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/rel, not created.
  std::string sub(std::string_view rel) const;
  // Creates path()/rel with its parents (mode 0755) and returns it. Throws on failure.
  std::string mkdir(std::string_view rel) const;

 private:
  std::string path_;
};

}  // namespace bkp::testutil
