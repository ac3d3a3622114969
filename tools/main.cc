// bkptool: the command-line client of backupd; everything happens in bkp::tools::run_cli().
#include <cstdio>
#include <exception>

#include "tools/cli.h"

int main(int argc, char** argv) {
  try {
    return bkp::tools::run_cli(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bkptool: internal error: %s\n", e.what());
    return 1;
  }
}
