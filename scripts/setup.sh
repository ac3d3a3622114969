#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine to build and test backupfs, then builds into ./build what
# the demo runs: the four binaries and bkp_treecmp (scripts/demo.sh calls it so).
# --tests builds everything, the test binaries too, and also installs what only the test suite
# uses: promtool (prometheus) to check /metrics, and Chromium with its driver and Selenium to
# check the status page in a real browser, and PostgreSQL and Ceph (radosgw) for the scale-out
# tests (scripts/test.sh calls it so). --scale-out installs only those two besides what the
# demo needs (scripts/demo.sh --scale-out).
# Idempotent: packages already installed are not touched (apt-get update runs only when
# something is missing and the package lists are older than a day), and the build is
# incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libfuse3-dev fuse3 liburing-dev libarchive-dev libtomlplusplus-dev libgtest-dev zlib1g-dev
  libzstd-dev libxxhash-dev libsqlite3-dev libexpected-dev libfmt-dev libsystemd-dev libssl-dev
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
  # backupd's catalog in PostgreSQL and snapshots in S3-compatible storage, when configured
  libpq-dev libcurl4-openssl-dev
  # the snapshot tests read archives with gzip, GNU tar, bsdtar and Python's tarfile
  gzip tar libarchive-tools python3
  attr fio systemd
)
TARGETS=(backupd replicator backupfs bkptool bkp_treecmp)
# the scale-out tests and `demo.sh --scale-out` run a real PostgreSQL and a one-node Ceph with
# radosgw (tests/scale/)
SCALE_OUT_PACKAGES=(postgresql ceph-mon ceph-mgr ceph-osd radosgw)
if [[ ${1:-} == --tests ]]; then
  PACKAGES+=(prometheus chromium chromium-driver python3-selenium "${SCALE_OUT_PACKAGES[@]}")
  TARGETS=()  # all
elif [[ ${1:-} == --scale-out ]]; then
  PACKAGES+=("${SCALE_OUT_PACKAGES[@]}")
fi

log() { printf '[setup] %s\n' "$*"; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    log "need root (or sudo) to run: $*"
    exit 1
  fi
}

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
      printf '%s\n' "$p"
    fi
  done
}

lists_are_fresh() {
  # Fresh = some package list was downloaded within the last 24 hours.
  [[ -n $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null |
          head -n 1) ]]
}

mapfile -t missing < <(missing_packages)
if ((${#missing[@]} > 0)); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! lists_are_fresh; then
    as_root apt-get update
  fi
  as_root apt-get install -y --no-install-recommends "${missing[@]}"
else
  log "all ${#PACKAGES[@]} packages already installed"
fi

# FUSE needs /dev/fuse; on some hosts the module is not loaded yet.
if [[ ! -e /dev/fuse ]]; then
  as_root modprobe fuse 2>/dev/null ||
    log "warning: /dev/fuse is missing; FUSE tests will be skipped"
fi

log "building ${TARGETS[*]:-everything} into ./build"
# The suite stays configured either way, so a later --tests only builds what is missing.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBKP_BUILD_TESTS=ON >/dev/null
ninja -C build "${TARGETS[@]}"
log "build ready in ./build"
