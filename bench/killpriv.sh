#!/bin/bash
# What negotiating FUSE_HANDLE_KILLPRIV_V2 buys: two backupfs binaries side by side (typically the
# one before and the one after), alternating within each round, on the same scratch directory.
#
#   bash bench/killpriv.sh OLD_BACKUPFS NEW_BACKUPFS [ROUNDS]      (as root; default 5 rounds)
#
# Each run mounts the binary (--no-tls, no backupd attached: what is measured is the request
# path, not shipping) and measures, with a `sync` before each timed part so one run's writeback
# does not land in the next one's fsyncs:
#   fsync      2000 pwrites of 4 KiB, each followed by fsync (a database-like writer)
#   4k         20000 pwrites of 4 KiB, no fsync (the request path alone)
#   1m         512 pwrites of 1 MiB (large writes: read(2) of requests versus splice)
# and, with the fuse_request_send tracepoint (lib.sh fuse_trace_*: a tracing instance of its own,
# this mount's connection only), the FUSE requests of 100 fsync'd 4 KiB writes by user 65534
# (GETXATTR is the round trip KILLPRIV_V2 removes). Prints every run and the medians.
# Leaves no mount behind: each mount is unmounted and its backupfs waited for, by PID.
set -euo pipefail

OLD=${1:?usage: killpriv.sh OLD_BACKUPFS NEW_BACKUPFS [ROUNDS]}
NEW=${2:?usage: killpriv.sh OLD_BACKUPFS NEW_BACKUPFS [ROUNDS]}
ROUNDS=${3:-5}
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=$(mktemp -d /var/tmp/bkp-killpriv.XXXXXX)
chmod 711 "$WORK"  # user 65534 writes under it
source "$BENCH/lib.sh"  # the fuse_request_send counting (fuse_trace_*)
SRC=$WORK/src
FS_PID=

cleanup() {
  if [[ -n $FS_PID ]]; then
    fusermount3 -u "$SRC" 2>/dev/null || true
    wait "$FS_PID" 2>/dev/null || true
  fi
  fuse_trace_close
  rm -rf "$WORK"
}
trap cleanup EXIT

fuse_trace_open 1024 || { echo "killpriv.sh: cannot count requests: $FUSE_TRACE_SKIP" >&2; exit 1; }

mount_fs() {  # BINARY
  rm -rf "$SRC" && mkdir -p "$SRC" "$WORK/state" && chmod 777 "$SRC"
  "$1" "$SRC" --listen 127.0.0.1:0 --no-tls --state-dir "$WORK/state" -f >"$WORK/fs.log" 2>&1 &
  FS_PID=$!
  for _ in $(seq 100); do grep -q "mounted on" "$WORK/fs.log" && return; sleep 0.1; done
  echo "backupfs did not mount: $(cat "$WORK/fs.log")" >&2
  exit 1
}

unmount_fs() {
  fusermount3 -u "$SRC"
  wait "$FS_PID" || true
  FS_PID=
}

# Requests of 100 fsync'd 4 KiB writes by a user without CAP_FSETID, as "OPCODE=N ...".
count_requests() {
  touch "$SRC/traced" && chmod 666 "$SRC/traced"
  fuse_trace_start "$SRC"
  setpriv --reuid=65534 --regid=65534 --clear-groups \
    dd if=/dev/zero of="$SRC/traced" bs=4k count=100 oflag=dsync conv=notrunc status=none
  fuse_trace_stop
  fuse_trace_counts | sort | awk '{printf "%s=%s ", $1, $2}'
}

timed() {  # KIND -> seconds
  sync
  /usr/bin/python3 -S - "$SRC/timed" "$1" <<'EOF'
import os, sys, time
path, kind = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
size, count = {"fsync": (4096, 2000), "4k": (4096, 20000), "1m": (1 << 20, 512)}[kind]
block = b"k" * size
t = time.monotonic()
for i in range(count):
    os.pwrite(fd, block, (i % 64) * size)
    if kind == "fsync":
        os.fsync(fd)
print("%.3f" % (time.monotonic() - t))
os.close(fd)
EOF
}

declare -A RESULTS
for round in $(seq "$ROUNDS"); do
  for which in old new; do
    bin=$OLD; [[ $which == new ]] && bin=$NEW
    mount_fs "$bin"
    line="round $round $which: requests: $(count_requests)"
    for kind in fsync 4k 1m; do
      s=$(timed "$kind")
      RESULTS[$which.$kind]+="$s "
      line+=" $kind=${s}s"
    done
    unmount_fs
    echo "$line"
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for kind in fsync 4k 1m; do
  old=$(median <<<"${RESULTS[old.$kind]}")
  new=$(median <<<"${RESULTS[new.$kind]}")
  ratio=$(awk "BEGIN {printf \"%.2f\", $new / $old}")
  echo "median $kind: old ${old}s new ${new}s (new/old $ratio)"
done
