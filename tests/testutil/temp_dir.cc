// TempDir: mkdtemp on creation, a mount-aware recursive delete on destruction.
#include "tests/testutil/temp_dir.h"

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <system_error>

#include "tests/testutil/mounted_fs.h"

namespace bkp::testutil {
namespace {

std::string temp_base() {
  for (const char* var : {"BKP_TEST_TMPDIR", "TMPDIR"}) {
    const char* v = getenv(var);
    if (v != nullptr && *v != '\0') return v;
  }
  return "/tmp";
}

}  // namespace

TempDir::TempDir(std::string_view prefix) {
  std::string templ = temp_base() + "/" + std::string(prefix) + "-XXXXXX";
  if (mkdtemp(templ.data()) == nullptr) {
    throw std::system_error(errno, std::generic_category(), "mkdtemp " + templ);
  }
  char* real = realpath(templ.c_str(), nullptr);
  if (real == nullptr) {
    throw std::system_error(errno, std::generic_category(), "realpath " + templ);
  }
  path_ = real;
  free(real);
}

TempDir::~TempDir() {
  const char* keep = getenv("BKP_KEEP_TEST_DIRS");
  if (keep != nullptr && std::string_view(keep) == "1") {
    fprintf(stderr, "[testutil] keeping %s (BKP_KEEP_TEST_DIRS=1)\n", path_.c_str());
    return;
  }
  auto mounts = mounts_under(path_);
  if (!mounts.empty()) {
    fprintf(stderr, "[testutil] NOT removing %s: %s is still mounted\n", path_.c_str(),
            mounts.front().c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);  // never follows symlinks
  if (ec) fprintf(stderr, "[testutil] removing %s: %s\n", path_.c_str(), ec.message().c_str());
}

std::string TempDir::sub(std::string_view rel) const { return path_ + "/" + std::string(rel); }

std::string TempDir::mkdir(std::string_view rel) const {
  std::string p = sub(rel);
  std::error_code ec;
  std::filesystem::create_directories(p, ec);
  if (ec) throw std::system_error(ec, "mkdir -p " + p);
  return p;
}

}  // namespace bkp::testutil
