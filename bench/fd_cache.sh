#!/bin/bash
# What the inode table's descriptor cache costs in syscalls: two backupfs binaries side by side
# (typically the one before and the one after a change), alternating within each round.
#
#   bash bench/fd_cache.sh OLD_BACKUPFS NEW_BACKUPFS [ROUNDS]      (as root; default 3 rounds)
#
# Each run mounts the binary (--no-tls, no backupd attached: the request path alone) over an
# empty directory and untars 15,000 small files in 150 directories into it, counting backupfs's
# open_by_handle_at and close calls with perf's syscall tracepoints. An inode whose descriptor is
# cached costs one open_by_handle_at in its life; one that is not costs one per operation.
# Prints every run and the medians. Leaves no mount behind: each mount is unmounted and its
# backupfs waited for, by PID.
set -euo pipefail

OLD=${1:?usage: fd_cache.sh OLD_BACKUPFS NEW_BACKUPFS [ROUNDS]}
NEW=${2:?usage: fd_cache.sh OLD_BACKUPFS NEW_BACKUPFS [ROUNDS]}
ROUNDS=${3:-3}
command -v perf >/dev/null || { echo "fd_cache.sh: needs perf (apt-get install linux-perf)" >&2; exit 2; }
WORK=$(mktemp -d /var/tmp/bkp-fdcache.XXXXXX)
MNT=
FS_PID=

cleanup() {
  if [[ -n $FS_PID ]]; then
    fusermount3 -u "$MNT" 2>/dev/null || true
    wait "$FS_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/tree"
for ((d = 0; d < 150; d++)); do
  mkdir "$WORK/tree/d$d"
  for ((f = 0; f < 100; f++)); do printf '%*s' $((f * 7)) '' >"$WORK/tree/d$d/f$f"; done
done
tar cf "$WORK/t.tar" -C "$WORK/tree" .

# run BINARY LABEL: prints "LABEL seconds opens closes".
run() {
  MNT=$WORK/mnt-$2-$RANDOM
  mkdir -p "$MNT"
  "$1" "$MNT" --listen 127.0.0.1:0 --no-tls --state-dir "$WORK/state" -f -q 2>>"$WORK/$2.log" &
  FS_PID=$!
  for ((i = 0; i < 200; i++)); do
    grep -q " $MNT fuse" /proc/mounts && break
    sleep 0.05
  done
  grep -q " $MNT fuse" /proc/mounts || { echo "fd_cache.sh: $1 did not mount" >&2; exit 1; }
  perf stat -x, -e syscalls:sys_enter_open_by_handle_at,syscalls:sys_enter_close -p "$FS_PID" \
    -o "$WORK/perf" &
  local perf_pid=$! t0 t1
  sleep 0.5  # perf attached
  t0=$(date +%s.%N)
  tar xf "$WORK/t.tar" -C "$MNT"
  t1=$(date +%s.%N)
  kill -INT "$perf_pid"
  wait "$perf_pid" || true
  fusermount3 -u "$MNT"
  wait "$FS_PID" || true
  FS_PID=
  local opens closes
  opens=$(awk -F, '/open_by_handle_at/ {print $1}' "$WORK/perf")
  closes=$(awk -F, '/sys_enter_close/ {print $1}' "$WORK/perf")
  echo "$2 $(echo "$t1 - $t0" | bc) $opens $closes"
}

results=()
for ((r = 1; r <= ROUNDS; r++)); do
  for which in old new; do
    bin=$OLD
    [[ $which == new ]] && bin=$NEW
    line=$(run "$bin" "$which")
    echo "round $r: $line (seconds, open_by_handle_at, close)"
    results+=("$line")
  done
done
for which in old new; do
  printf '%s\n' "${results[@]}" | awk -v w="$which" '$1 == w' | sort -k3 -n |
    awk -v n="$ROUNDS" '{a[NR] = $0} END {split(a[int((n + 1) / 2)], m, " ");
      printf "median %s: untar %.2f s, open_by_handle_at %d, close %d\n", m[1], m[2], m[3], m[4]}'
done
