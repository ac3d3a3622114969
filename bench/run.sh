#!/usr/bin/env bash
# The backupfs benchmark: one command that measures backupfs against its peers on this machine and
# prints one table of figures and ratios, all taken in the same run.
#
#   bash bench/run.sh [--smoke] [--rounds N] [--out FILE] [--build-dir DIR] [--only LIST] [--keep]
#
#   --smoke          tiny sizes, one round, < 60 s, installs nothing: what is missing is reported
#                    as a "skipped: reason" row. Run by the test suite so the benchmark cannot rot.
#   --rounds N       rounds per measurement (default 3; --smoke: 1). Figures are medians over the
#                    rounds; ratios are taken per round, then the median of those.
#   --out FILE       results file, .json or .csv (default bench/results/latest.json; --smoke:
#                    BUILD/bench/smoke.json, so the test suite never overwrites a full run's
#                    results; the table is always printed to stdout as well)
#   --build-dir DIR  a build tree with fs/backupfs, server/backupd, replicator/replicator and
#                    tools/bkptool (default: configure and build into build-bench/ of this checkout)
#   --only LIST      comma-separated sections to run: fs,server,incremental,snapshot,restart,memory
#                    (default all)
#   --fs-configs L   section 1's configurations (default native,pll,pll-xattr,backupfs,
#                    backupfs-tmpfs,backupfs-detached; pll-xattr is passthrough_ll -o xattr).
#                    The last two are diagnostics, not headline figures:
#                    backupfs-tmpfs ships to a backupd whose state is on a tmpfs (no second
#                    on-disk copy), backupfs-detached records with no backupd attached at all
#   --no-diagnostics only the headline figures: drops the diagnostic fs configurations, the
#                    tmpfs server runs and the passthrough_ll incremental row
#   --deadline S     stop (and clean up) after S seconds (default: --smoke 200, else none), so
#                    a hung run ends with its trap, before an outer timeout can SIGKILL it
#   --keep           keep the scratch directory (/var/tmp/backupfs-bench.*) for inspection
#   --install        install missing Debian packages even with --smoke (the full run always does)
#   --no-install     install nothing in a full run either (e.g. --only restart,memory, which need
#                    none of the peers): a missing tool becomes a "skipped: reason" row
#
# What it measures (see bench/README.md for the method and RESULTS.md for a full run):
#   1. fs          filesystem overhead: native vs libfuse's passthrough_ll (plain and -o xattr) vs
#                  backupfs (shipping to a local backupd): fio sequential writes/reads, 4 KiB random
#                  writes (fsync at the end, and fsync after each), untar of a ~15k-entry tree with
#                  its FUSE requests counted (fuse_request_send), stat walks; daemon CPU per workload
#   2. incremental a 1 MiB change + 10 touched files in a ~2 GiB dataset: backupfs (bytes read,
#                  bytes on the wire, time to a replica) vs rsync, restic and borg; then no change
#   3. server      baseline ingest throughput, fan-out to one vs two replicas, peak RSS
#   4. snapshot    the volume's tgz vs `bsdtar czf` of the same tree
#   5. restart     backupfs and backupd restarts (clean, kill -9, changed while down) against the
#                  full baseline of the same dataset: bytes on the wire per hop, bytes read, time
#   6. memory      backupfs's RSS after 4 GiB of writes + 50k metadata operations, no backupd
#
# Needs root and /dev/fuse (mounts, drop_caches). Works in a scratch directory under /var/tmp and
# leaves no mount or process behind: everything it starts is stopped by PID in an EXIT trap.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
START_TIME=$EPOCHREALTIME
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

SMOKE=0
ROUNDS=
OUT=
BUILD_DIR=
ONLY=fs,server,incremental,snapshot,restart,memory
FS_CONFIG_LIST=
DIAG=1
DEADLINE=
KEEP=0
INSTALL=
ARGS=("$@")
while (($#)); do
  case $1 in
    --smoke) SMOKE=1; shift ;;
    --rounds) ROUNDS=${2:?--rounds needs a number}; shift 2 ;;
    --rounds=*) ROUNDS=${1#*=}; shift ;;
    --out) OUT=${2:?--out needs a file}; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --build-dir) BUILD_DIR=${2:?--build-dir needs a directory}; shift 2 ;;
    --build-dir=*) BUILD_DIR=${1#*=}; shift ;;
    --only) ONLY=${2:?--only needs a list}; shift 2 ;;
    --only=*) ONLY=${1#*=}; shift ;;
    --fs-configs) FS_CONFIG_LIST=${2:?--fs-configs needs a list}; shift 2 ;;
    --fs-configs=*) FS_CONFIG_LIST=${1#*=}; shift ;;
    --no-diagnostics) DIAG=0; shift ;;
    --deadline) DEADLINE=${2:?--deadline needs seconds}; shift 2 ;;
    --deadline=*) DEADLINE=${1#*=}; shift ;;
    --keep) KEEP=1; shift ;;
    --install) INSTALL=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -z $ROUNDS ]] && ROUNDS=$((SMOKE ? 1 : 3))
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --rounds must be a positive number" >&2; exit 2; }
[[ -z $INSTALL ]] && INSTALL=$((SMOKE ? 0 : 1))
[[ -z $DEADLINE ]] && DEADLINE=$((SMOKE ? 200 : 0))
[[ $DEADLINE =~ ^[0-9]+$ ]] || { echo "run.sh: --deadline must be a number of seconds" >&2; exit 2; }
if [[ -z $FS_CONFIG_LIST ]]; then
  FS_CONFIG_LIST=native,pll,pll-xattr,backupfs
  ((DIAG)) && FS_CONFIG_LIST+=,backupfs-tmpfs,backupfs-detached
fi

source "$BENCH/lib.sh"
source "$BENCH/fs_overhead.sh"
source "$BENCH/incremental.sh"
source "$BENCH/server.sh"
source "$BENCH/snapshot.sh"
source "$BENCH/restart.sh"

# --- sizes -------------------------------------------------------------------------------------
if ((SMOKE)); then
  FIO_MIB=32 RAND_MIB=2 FSYNC_WRITES=64 TAR_ENTRIES=400
  DS_LARGE=2 DS_LARGE_MIB=4 DS_SMALL=100
  IDLE_S=1 IDLE_WINDOW=0.2 SNAP_EVERY=1s
  TMPFS_FS_MIB=256 TMPFS_SRV_MIB=256  # the diagnostics' tmpfs sizes
  RST_SMALL=4 RST_TIMEOUT=60
  MEM_FILES=8 MEM_MIB=16 MEM_OPS=2000
else
  FIO_MIB=2048 RAND_MIB=256 FSYNC_WRITES=2048 TAR_ENTRIES=15000
  DS_LARGE=4 DS_LARGE_MIB=448 DS_SMALL=20000  # ~2 GiB: 1.75 GiB large + ~0.2 GiB small
  IDLE_S=3 IDLE_WINDOW=0.6 SNAP_EVERY=15s
  # fio's 2 GiB file and the untarred tree (a round deletes nothing until it ends); the mirror +
  # 2 replicas of ~2 GiB
  TMPFS_FS_MIB=3584 TMPFS_SRV_MIB=7168
  RST_SMALL=8 RST_TIMEOUT=900  # small files rewritten while backupfs is down; wait bound (s)
  MEM_FILES=200 MEM_MIB=4096 MEM_OPS=50000  # section 6: 4 GiB over 200 files + 50k operations
fi
# Reduced sizes for trying a change to the benchmark (never for the published figures):
# BENCH_FIO_MIB, BENCH_RAND_MIB, BENCH_FSYNC_WRITES, BENCH_TAR_ENTRIES, BENCH_DS_LARGE, BENCH_DS_LARGE_MIB,
# BENCH_DS_SMALL, BENCH_MEM_MIB, BENCH_MEM_OPS override the sizes above; the table's labels and
# meta record what ran.
FIO_MIB=${BENCH_FIO_MIB:-$FIO_MIB} RAND_MIB=${BENCH_RAND_MIB:-$RAND_MIB}
FSYNC_WRITES=${BENCH_FSYNC_WRITES:-$FSYNC_WRITES}
TAR_ENTRIES=${BENCH_TAR_ENTRIES:-$TAR_ENTRIES} DS_LARGE=${BENCH_DS_LARGE:-$DS_LARGE}
DS_LARGE_MIB=${BENCH_DS_LARGE_MIB:-$DS_LARGE_MIB} DS_SMALL=${BENCH_DS_SMALL:-$DS_SMALL}
MEM_MIB=${BENCH_MEM_MIB:-$MEM_MIB} MEM_OPS=${BENCH_MEM_OPS:-$MEM_OPS}
MODE=$([[ $SMOKE == 1 ]] && echo smoke || echo full)
[[ -n ${BENCH_FIO_MIB:-}${BENCH_RAND_MIB:-}${BENCH_FSYNC_WRITES:-}${BENCH_TAR_ENTRIES:-}${BENCH_DS_LARGE:-}${BENCH_DS_LARGE_MIB:-}${BENCH_DS_SMALL:-}${BENCH_MEM_MIB:-}${BENCH_MEM_OPS:-} ]] &&
  MODE+=" (reduced sizes)"

# --- preconditions -----------------------------------------------------------------------------
if [[ $(id -u) -ne 0 || ! -c /dev/fuse ]]; then
  echo "skipped: the benchmark needs root and /dev/fuse (mounts, drop_caches)"
  exit 0
fi

PACKAGES=(fio rsync restic borgbackup libarchive-tools time fuse3 libfuse3-dev gcc pkg-config)
if ((INSTALL)); then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
      missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing from Debian: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
  fi
fi

if [[ -z $BUILD_DIR ]]; then
  BUILD_DIR=$REPO/build-bench
  log "building backupfs into $BUILD_DIR"
  cmake -S "$REPO" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DBKP_BUILD_TESTS=OFF >/dev/null
  ninja -C "$BUILD_DIR" >/dev/null
fi
BUILD_DIR=$(cd "$BUILD_DIR" && pwd)
if [[ -z $OUT ]]; then
  OUT=$BENCH/results/latest.json
  ((SMOKE)) && OUT=$BUILD_DIR/bench/smoke.json
fi
BACKUPFS=$BUILD_DIR/fs/backupfs
BACKUPD=$BUILD_DIR/server/backupd
REPLICATOR=$BUILD_DIR/replicator/replicator
BKPTOOL=$BUILD_DIR/tools/bkptool
for b in "$BACKUPFS" "$BACKUPD" "$REPLICATOR" "$BKPTOOL"; do
  [[ -x $b ]] || die "$b is missing: build the project first (or pass --build-dir)"
done

# libfuse's passthrough_ll example, the plain-FUSE baseline (pll, and pll-xattr with -o xattr),
# built into the build tree.
build_passthrough_ll() {
  local ex=/usr/share/doc/libfuse3-dev/examples
  PLL=$BUILD_DIR/bench/passthrough_ll
  PLL_SKIP=
  if [[ ! -f $ex/passthrough_ll.c ]]; then
    PLL_SKIP="libfuse3-dev examples not installed"
  elif ! have gcc || ! have pkg-config; then
    PLL_SKIP="gcc or pkg-config not installed"
  elif [[ ! -x $PLL || $PLL -ot $ex/passthrough_ll.c ]]; then
    mkdir -p "$BUILD_DIR/bench"
    # shellcheck disable=SC2046  # pkg-config prints several words on purpose
    gcc -O2 -o "$PLL" "$ex/passthrough_ll.c" -I"$ex" $(pkg-config --cflags --libs fuse3) ||
      PLL_SKIP="passthrough_ll did not build"
  fi
  return 0
}
build_passthrough_ll

# --- scratch space and cleanup -----------------------------------------------------------------
WORK=$(mktemp -d /var/tmp/backupfs-bench.XXXXXX)
RAW=$WORK/raw.jsonl
: >"$RAW"
ROUND=0

on_exit() {
  local status=$?
  trap - EXIT INT TERM
  stop_watchdog
  cleanup_all
  if ((KEEP)) || ((status != 0)); then
    log "scratch directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap on_exit EXIT
trap 'log "interrupted"; exit 130' INT TERM

# --deadline: a watchdog that, when the time is up, kills what run.sh is waiting for (its
# descendants in its own session; the daemons run in sessions of their own) and then sends
# run.sh SIGTERM, so the EXIT trap unmounts and stops everything. A test runner's timeout would
# SIGKILL the whole tree instead and leave dead FUSE mounts behind.
WATCHDOG_PID=
start_watchdog() {
  local secs=$1 me=$$
  (
    sp=
    trap '[[ -n $sp ]] && kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$secs" &
    sp=$!
    wait "$sp"
    log "deadline of $secs s passed: stopping"
    kill_session_descendants "$me" "$BASHPID"
    kill -TERM "$me" 2>/dev/null
  ) &
  WATCHDOG_PID=$!
}
stop_watchdog() {
  [[ -n $WATCHDOG_PID ]] || return 0
  kill "$WATCHDOG_PID" 2>/dev/null || true
  wait "$WATCHDOG_PID" 2>/dev/null || true
  WATCHDOG_PID=
}
# kill_session_descendants ROOT EXCEPT: SIGTERM to every descendant of ROOT in ROOT's session,
# EXCEPT excepted (and its own descendants).
kill_session_descendants() {
  local root=$1 except=$2 stat line pid ppid sid rsid
  local -A parent=() session=()
  for stat in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$stat" || continue
    pid=${line%% *}
    read -r _ ppid _ sid _ <<<"${line##*) }"
    parent[$pid]=$ppid
    session[$pid]=$sid
  done
  rsid=${session[$root]:-}
  for pid in "${!parent[@]}"; do
    [[ ${session[$pid]} == "$rsid" ]] || continue
    local p=$pid
    while [[ -n ${parent[$p]:-} && $p != "$root" && $p != "$except" && $p != 1 ]]; do
      p=${parent[$p]}
    done
    [[ $p == "$root" && $pid != "$root" ]] && { kill -TERM "$pid" 2>/dev/null || true; }
  done
  return 0
}
((DEADLINE > 0)) && start_watchdog "$DEADLINE"

log "mode $MODE, $ROUNDS round(s), scratch $WORK"

# The dataset of sections 2-4 (server, incremental, snapshot), generated once.
DATA=$WORK/data
DATA_BYTES=0
make_dataset() {
  [[ -d $DATA ]] && return 0
  log "generating the dataset: $DS_LARGE x $DS_LARGE_MIB MiB + $DS_SMALL small files"
  local out
  out=$(tools gen-dataset "$DATA" --large "$DS_LARGE" --large-mib "$DS_LARGE_MIB" \
    --small "$DS_SMALL")
  DATA_BYTES=$(json_get "$out" bytes)
  record dataset.bytes "$DATA_BYTES"
  sync
}

section_on() { [[ ,$ONLY, == *,$1,* ]]; }

section_on fs && fs_overhead_section
section_on server && { make_dataset; server_section; }
section_on incremental && { make_dataset; incremental_section; }
section_on snapshot && { make_dataset; snapshot_section; }
section_on restart && { make_dataset; restart_section; }
section_on memory && memory_section

# --- the table ---------------------------------------------------------------------------------
META=$WORK/meta.json
"$PY" - "$META" <<EOF
import glob, json, os, platform, subprocess, sys
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""
json.dump({
    "command": "bash bench/run.sh ${ARGS[*]}",
    "mode": "$MODE",
    "rounds": $ROUNDS,
    "sections": "$ONLY".split(","),
    "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
    "git": sh("git -C '$REPO' describe --always --dirty"),
    "nproc": os.cpu_count(),
    "memory": sh("free -h | awk '/^Mem:/ {print \$2}'"),
    "kernel": platform.release(),
    "filesystem": sh("df -T /var/tmp | awk 'NR == 2 {print \$2 \" on \" \$1}'"),
    # A VM whose host takes back freed guest memory (virtio-balloon free page reporting, feature
    # bit 5) makes the first touch of such a page cost a host fault: runs that follow a large
    # drop_caches or deletion are slower, so only alternating A/B runs compare (RESULTS.md).
    "free_page_reporting": any(open(f).read()[5:6] == "1" for f in
                               glob.glob("/sys/bus/virtio/drivers/virtio_balloon/virtio*/features")),
    "sizes": {"fio_mib": $FIO_MIB, "randwrite_mib": $RAND_MIB,
              "fsync_writes": $FSYNC_WRITES, "tar_entries": $TAR_ENTRIES,
              "dataset_large": "$DS_LARGE x $DS_LARGE_MIB MiB", "dataset_small": $DS_SMALL,
              "restart_small": $RST_SMALL, "memory_mib": $MEM_MIB, "memory_files": $MEM_FILES,
              "memory_ops": $MEM_OPS},
    "duration_s": round($EPOCHREALTIME - $START_TIME, 1),
    "loadavg_start": "$LOAD_START",
    "loadavg_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
}, open(sys.argv[1], "w"), indent=1)
EOF
mkdir -p "$(dirname "$OUT")"
"$PY" "$BENCH/report.py" --raw "$RAW" --meta "$META" --out "$OUT"
log "results written to $OUT ($(calc "$EPOCHREALTIME - $START_TIME" | cut -d. -f1) s)"
