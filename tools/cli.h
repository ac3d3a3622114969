// bkptool's command line: parses it (CLI11), resolves the server, runs the command and prints
// the result; returns the process exit status (tools/failure.h).
#pragma once

namespace bkp::tools {

int run_cli(int argc, char** argv);

}  // namespace bkp::tools
