#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs the whole test suite with CTest: unit tests
# first, then the integration tests with real mounts and daemons on 127.0.0.1. Every test has
# its own timeout (tests/CMakeLists.txt); --timeout is the fallback for any test without one.
# Exits with CTest's status.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --tests

status=0
ctest --test-dir build --output-on-failure --timeout 600 "$@" || status=$?
exit "$status"
