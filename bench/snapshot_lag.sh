#!/bin/bash
# How long an application's write takes to reach backupd's mirror while a snapshot of its volume
# is being written (issue 12: a snapshot must not stop the stream; target lag <= 1 s, no link
# drop). A dataset of 20,000 4 KiB files and 2 x 300 MiB is made and backed up (baseline); then
# for 100 s a writer rewrites a 64 KiB file with fsync every 100 ms and times each until the
# mirror holds it, while the volume's schedule (every 40 s) writes snapshots. Prints the write
# -> mirror latency during snapshot runs and outside them, the runs (cut time, archive time) and
# how many times backupfs gave up waiting for an ack ("nothing in time", must be 0).
#
#   bash bench/snapshot_lag.sh BUILD_DIR        (as root; ~3 min, ~1.5 GiB under /var/tmp)
#
# Standalone, not part of run.sh. Leaves no mount or process behind (EXIT trap, by PID).
set -euo pipefail
BUILD=$(cd "${1:?usage: snapshot_lag.sh BUILD_DIR}" && pwd)
W=$(mktemp -d /var/tmp/bkp-snaplag.XXXXXX)
mkdir -p "$W"/{app,state,logs,node-state}
APP=$W/app
BACKUPD=
cleanup() {
  mountpoint -q "$APP" && fusermount3 -u "$APP"
  [[ -n $BACKUPFS ]] && for _ in $(seq 100); do kill -0 "$BACKUPFS" 2>/dev/null || break; sleep 0.1; done
  [[ -n $BACKUPD ]] && kill "$BACKUPD" 2>/dev/null && wait "$BACKUPD" 2>/dev/null
  rm -rf "$W"
}
BACKUPFS=
trap cleanup EXIT

python3 - "$APP" <<'EOF'
import os, sys
root = sys.argv[1]
for d in range(100):
    os.makedirs(f"{root}/small/d{d:03}", exist_ok=True)
    for f in range(200):
        with open(f"{root}/small/d{d:03}/f{f:03}", "wb") as fh:
            fh.write(os.urandom(4096))
os.makedirs(f"{root}/big", exist_ok=True)
for i in range(2):
    with open(f"{root}/big/b{i}", "wb") as fh:
        for _ in range(300):
            fh.write(os.urandom(1 << 20))
EOF
echo "dataset: $(find "$APP" -type f | wc -l) files, $(du -sh "$APP" | cut -f1)"

SERVER_ID=$("$BUILD/server/backupd" --state-dir "$W/state" --show-id)
setsid "$BUILD/server/backupd" --state-dir "$W/state" --listen 127.0.0.1:0 \
  --port-file "$W/port" --control-socket "$W/state/control.sock" >"$W/logs/backupd.log" 2>&1 &
BACKUPD=$!
for _ in $(seq 200); do [[ -s $W/port ]] && break; sleep 0.1; done
setsid "$BUILD/fs/backupfs" "$APP" --listen 127.0.0.1:0 --port-file "$W/node-port" \
  --host lag --server-id "$SERVER_ID" --state-dir "$W/node-state" -f >"$W/logs/backupfs.log" 2>&1 &
BACKUPFS=$!
for _ in $(seq 200); do [[ -s $W/node-port ]] && mountpoint -q "$APP" && break; sleep 0.1; done
BKPTOOL=("$BUILD/tools/bkptool" --server "$W/state/control.sock")
"${BKPTOOL[@]}" register 127.0.0.1 "$(tr -dc 0-9 <"$W/node-port")" "$APP" --every 40s >/dev/null
MIRROR=$(echo "$W"/state/volumes/lag/*/mirror)
for _ in $(seq 600); do
  "$BUILD/tests/bkp_treecmp" "$APP" "$MIRROR" >/dev/null 2>&1 && break
  sleep 1
done
echo "baseline converged"

# Writer: 64 KiB + fsync every 100 ms for 100 s, each timed until the mirror has it.
python3 - "$APP" "$MIRROR" "$W/logs/backupd.log" <<'EOF'
import os, sys, time
app, mirror, log = sys.argv[1:]
os.makedirs(f"{app}/live", exist_ok=True)
def state():
    text = open(log).read()
    return text.rfind(" cut at change "), text.rfind("info: run ")
samples = []  # (t, latency, cuts, runs)
t_end = time.time() + 100
i = 0
while time.time() < t_end:
    data = os.urandom(65536)
    name = f"live/f{i % 50}"
    t0 = time.time()
    fd = os.open(f"{app}/{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data); os.fsync(fd); os.close(fd)
    while True:
        try:
            with open(f"{mirror}/{name}", "rb") as fh:
                if fh.read() == data:
                    break
        except FileNotFoundError:
            pass
        if time.time() - t0 > 600:
            break
        time.sleep(0.002)
    lat = time.time() - t0
    cuts, runs = state()
    samples.append((t0, lat, cuts, runs))
    i += 1
    time.sleep(max(0, 0.1 - lat))
during = [s[1] for s in samples if s[2] > s[3]]   # a cut taken, its run not ended
outside = [s[1] for s in samples if s[2] <= s[3]]
def stats(xs):
    if not xs: return "none"
    xs = sorted(xs)
    return f"n={len(xs)} p50={xs[len(xs)//2]*1000:.0f} ms p99={xs[int(len(xs)*0.99)]*1000:.0f} ms max={xs[-1]*1000:.0f} ms"
print("write -> mirror during a snapshot run:", stats(during))
print("write -> mirror otherwise:           ", stats(outside))
t_first = samples[0][0]
for t, lat, c, r in sorted(samples, key=lambda s: -s[1])[:5]:
    print(f"  slow: at +{t - t_first:.1f} s took {lat*1000:.0f} ms ({'during a run' if c > r else 'no run'})")
EOF
grep -E "cut at change|info: run " "$W/logs/backupd.log" | sed 's/^<.>//' | cut -c1-200
echo "backupfs gave up waiting for an ack: $(grep -c "nothing in time" "$W/logs/backupfs.log" || true) times"
