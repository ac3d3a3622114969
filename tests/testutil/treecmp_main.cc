// bkp_treecmp: the tests' tree comparer as a command, for scripts/demo.sh and for humans
// checking a mirror by hand.
//
//   bkp_treecmp [--no-mtime] [--no-owner] [--no-root] [--no-xattrs] [--no-holes] SOURCE COPY...
//                                     exit 0 if every COPY equals SOURCE, else 1 and the difference
//   bkp_treecmp --stats DIR                           "files N dirs N symlinks N bytes N"
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tests/testutil/tree_compare.h"

int main(int argc, char** argv) {
  using namespace bkp::testutil;
  CompareOptions opts;
  std::vector<std::string> paths;
  bool stats = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--no-mtime") {
      opts.mtime = false;
    } else if (a == "--no-owner") {
      opts.owner = false;
    } else if (a == "--no-root") {
      opts.root_attrs = false;
    } else if (a == "--no-xattrs") {
      opts.xattrs = false;
    } else if (a == "--no-holes") {
      opts.holes = false;
    } else if (a == "--stats") {
      stats = true;
    } else if (a.rfind("--", 0) == 0) {
      fprintf(stderr, "bkp_treecmp: unknown option %s\n", a.c_str());
      return 2;
    } else {
      paths.push_back(a);
    }
  }
  if (stats) {
    if (paths.size() != 1) {
      fprintf(stderr, "usage: bkp_treecmp --stats DIR\n");
      return 2;
    }
    auto s = tree_stats(paths[0]);
    if (!s) {
      fprintf(stderr, "bkp_treecmp: cannot walk %s\n", paths[0].c_str());
      return 1;
    }
    printf("files %llu dirs %llu symlinks %llu bytes %llu\n",
           static_cast<unsigned long long>(s->files), static_cast<unsigned long long>(s->dirs),
           static_cast<unsigned long long>(s->symlinks), static_cast<unsigned long long>(s->bytes));
    return 0;
  }
  if (paths.size() < 2) {
    fprintf(stderr,
            "usage: bkp_treecmp [--no-mtime] [--no-owner] [--no-root] [--no-xattrs] [--no-holes]\n"
            "                   SOURCE COPY...\n"
            "       bkp_treecmp --stats DIR\n");
    return 2;
  }
  int rc = 0;
  for (size_t i = 1; i < paths.size(); ++i) {
    std::string d = compare_trees(paths[0], paths[i], opts);
    if (!d.empty()) {
      printf("%s differs from %s: %s\n", paths[i].c_str(), paths[0].c_str(), d.c_str());
      rc = 1;
    }
  }
  return rc;
}
