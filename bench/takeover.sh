#!/bin/bash
# The application-visible pause of a backupfs restart (issue 11: target <= 100 ms): a writer does
# 4 KiB pwrites, each followed by fsync, and a reader stats and reads files, both timing every
# call, while the worker is killed (SIGKILL) and upgraded (SIGHUP to the keeper) in turn.
#
#   bash bench/takeover.sh BACKUPFS [RESTARTS]        (as root; default 10 of each kind)
#
# For each restart the pause is the longest call that was in progress when the signal was sent
# (it waited for the new worker). Baseline: the same calls over the same time with no restart,
# measured first in the same run. Prints the baseline's median, p99 and max call time and, per
# kind of restart, the median and max pause; a call that failed is counted and reported (there
# must be none). The mount runs with --no-tls and no backupd attached: what is measured is the
# takeover, not shipping. Leaves no mount behind.
set -euo pipefail

BACKUPFS=${1:?usage: takeover.sh BACKUPFS [RESTARTS]}
RESTARTS=${2:-10}
WORK=$(mktemp -d /var/tmp/bkp-takeover.XXXXXX)
SRC=$WORK/src
LOG=$WORK/backupfs.log
KEEPER=

cleanup() {
  [[ -n ${LOAD_PID:-} ]] && kill "$LOAD_PID" 2>/dev/null && wait "$LOAD_PID" 2>/dev/null
  if [[ -n $KEEPER ]]; then
    fusermount3 -u "$SRC" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$KEEPER" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$SRC" "$WORK/state"
"$BACKUPFS" "$SRC" --listen 127.0.0.1:0 --no-tls --state-dir "$WORK/state" -f >"$LOG" 2>&1 &
KEEPER=$!
for _ in $(seq 100); do grep -q "worker [0-9]* serving" "$LOG" && break; sleep 0.1; done
grep -q "worker [0-9]* serving" "$LOG" || { cat "$LOG"; exit 1; }
worker() { cat "/proc/$KEEPER/task/$KEEPER/children" | tr -d ' '; }
servings() { grep -c "worker [0-9]* serving" "$LOG"; }

# The load: writes and reads until told to stop; every call's start and end go to a file.
python3 - "$SRC" "$WORK/calls" "$WORK/stop" <<'EOF' &
import os, sys, threading, time
src, out, stop = sys.argv[1:4]
calls, errors = [], []
def writer():
    fd = os.open(f"{src}/log", os.O_CREAT | os.O_WRONLY, 0o644)
    block, off = b"w" * 4096, 0
    while not os.path.exists(stop):
        t = time.monotonic()
        try:
            os.pwrite(fd, block, off); os.fsync(fd); off = (off + 4096) % (64 << 20)
        except OSError as e:
            errors.append(f"write: {e}")
        calls.append((t, time.monotonic(), "w"))
def reader():
    while not os.path.exists(stop):
        t = time.monotonic()
        try:
            os.stat(f"{src}/log")
            with open(f"{src}/log", "rb") as f: f.read(4096)
            os.listdir(src)
        except OSError as e:
            errors.append(f"read: {e}")
        calls.append((t, time.monotonic(), "r"))
os.close(os.open(f"{src}/log", os.O_CREAT | os.O_WRONLY, 0o644))
threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
for t in threads: t.start()
for t in threads: t.join()
with open(out, "w") as f:
    for c in calls: f.write(f"{c[0]:.6f} {c[1]:.6f} {c[2]}\n")
    for e in errors: f.write(f"error {e}\n")
EOF
LOAD_PID=$!

mark() { python3 -c 'import time; print(f"{time.monotonic():.6f}")'; }
sleep 3
echo "baseline $(mark)" >"$WORK/marks"
sleep 3
echo "baseline_end $(mark)" >>"$WORK/marks"
for kind in kill upgrade; do
  for _ in $(seq "$RESTARTS"); do
    before=$(servings)
    echo "$kind $(mark)" >>"$WORK/marks"
    if [[ $kind == kill ]]; then kill -9 "$(worker)"; else kill -HUP "$KEEPER"; fi
    for _ in $(seq 300); do (($(servings) > before)) && break; sleep 0.02; done
    sleep 0.5
  done
done
touch "$WORK/stop"
wait "$LOAD_PID"
LOAD_PID=

python3 - "$WORK/calls" "$WORK/marks" <<'EOF'
import statistics, sys
calls, errors = [], []
for line in open(sys.argv[1]):
    p = line.split()
    if p[0] == "error": errors.append(line.strip())
    else: calls.append((float(p[0]), float(p[1])))
marks = [(l.split()[0], float(l.split()[1])) for l in open(sys.argv[2])]
b0 = next(t for k, t in marks if k == "baseline"); b1 = next(t for k, t in marks if k == "baseline_end")
base = sorted(e - s for s, e in calls if s >= b0 and e <= b1)
ms = lambda x: f"{x * 1000:.1f} ms"
print(f"baseline ({len(base)} calls): median {ms(statistics.median(base))}, "
      f"p99 {ms(base[int(len(base) * 0.99)])}, max {ms(base[-1])}")
for kind in ("kill", "upgrade"):
    pauses = []
    for k, t in marks:
        if k != kind: continue
        spanning = [e - s for s, e in calls if s <= t <= e]
        pauses.append(max(spanning) if spanning else 0.0)
    print(f"{kind:8} x{len(pauses)}: pause median {ms(statistics.median(pauses))}, "
          f"max {ms(max(pauses))}")
print(f"errors seen by the application: {len(errors)}")
for e in errors[:10]: print("  " + e)
sys.exit(1 if errors else 0)
EOF
