#!/usr/bin/env bash
# A local demo of backupfs on one machine: backupd on 127.0.0.1, two replicators, and an
# application directory mounted with backupfs and registered with bkptool (snapshots every 5 s)
# while a writer changes it for --duration seconds (new files, 1 MiB edits inside a large file,
# renames, deletes), with a progress line every few seconds. Then it waits until the mirror and
# both replicas equal the source, checks that with a full tree compare, waits for a scheduled
# run that started after that (so the history covers the converged tree), prints `bkptool
# history` and a summary.
#
#   bash scripts/demo.sh [--duration SECONDS] [--dir DIR] [--build-dir DIR]
#
# --duration defaults to 30. Everything lives in --dir (default ./demo-state, recreated on each
# run). --build-dir uses an existing build and skips set-up (the test suite runs the demo so).
# Ctrl-C stops the demo cleanly: the mount is removed and every process the demo started is
# stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

DURATION=30
DEMO=$REPO/demo-state
BUILD=
while (($#)); do
  case $1 in
    --dir) DEMO=$(realpath -m "${2:?--dir needs a directory}"); shift 2 ;;
    --build-dir) BUILD=$(realpath "${2:?--build-dir needs a directory}"); shift 2 ;;
    --duration) DURATION=${2:?--duration needs a number of seconds}; shift 2 ;;
    --duration=*) DURATION=${1#--duration=}; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $DURATION =~ ^[0-9]+$ ]] || { echo "demo.sh: --duration must be a whole number" >&2; exit 2; }

if [[ -z $BUILD ]]; then
  bash scripts/setup.sh
  BUILD=$REPO/build
fi
STATE=$DEMO/server
APP=$DEMO/app
R1=$DEMO/replica1
R2=$DEMO/replica2
LOGS=$DEMO/logs
ADDRESS=127.0.0.1  # where backupd reaches the node
NAME=demo          # what the node calls itself (backupfs --host): the volume is demo:$APP

say() { printf '[demo] %s\n' "$*"; }

is_mounted() { awk -v d="$1" '$5 == d { found = 1 } END { exit !found }' /proc/self/mountinfo; }

# --- leftovers of an interrupted earlier run ---------------------------------------------------
if is_mounted "$APP"; then
  say "unmounting a leftover mount on $APP"
  fusermount3 -u "$APP" || fusermount3 -u -z "$APP"
fi
if awk -v d="$DEMO/" 'index($5, d) == 1 { found = 1 } END { exit !found }' \
  /proc/self/mountinfo; then
  say "something is still mounted under $DEMO; refusing to delete it" >&2
  exit 1
fi
rm -rf "$DEMO"
mkdir -p "$STATE" "$APP" "$R1" "$R2" "$LOGS"

# --- process bookkeeping: only our own PIDs, stopped in order on any exit -----------------------
PIDS=()
FS_PID=

wait_gone() {  # pid seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if is_mounted "$APP"; then
    say "unmounting $APP"
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      fusermount3 -u "$APP" 2>/dev/null && break
      sleep 0.5
    done
  fi
  if [[ -n $FS_PID ]] && ! wait_gone "$FS_PID" 15; then kill "$FS_PID" 2>/dev/null || true; fi
  is_mounted "$APP" && fusermount3 -u -z "$APP" 2>/dev/null
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait_gone "$pid" 10 || kill -9 "$pid" 2>/dev/null || true; done
  say "stopped; logs and trees are in $DEMO"
  exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# Daemons run in their own session so Ctrl-C reaches only this script, which then stops them
# in order (unmount first, so backupfs ships what is left).
start() {  # name command...
  local name=$1
  shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!")
  say "started $name (pid $!): $*"
}

# --- the server and two replicas -------------------------------------------------------------
# Every link is TLS with identities: each daemon prints its own with --show-id, the node and the
# replicas are told backupd's, and backupd is told the replicas' (bkptool replica add), as an
# operator enrols them. bkptool talks to backupd over its local control socket.
SERVER_ID=$("$BUILD/server/backupd" --state-dir "$STATE" --show-id)
say "backupd's identity: $SERVER_ID"
start backupd "$BUILD/server/backupd" --state-dir "$STATE" --listen 127.0.0.1:0 \
  --port-file "$DEMO/port" --control-socket "$STATE/control.sock" \
  --http-listen 127.0.0.1:0 --http-port-file "$DEMO/http-port"
for _ in $(seq 200); do [[ -s $DEMO/port ]] && break; sleep 0.1; done
PORT=$(tr -dc 0-9 <"$DEMO/port" 2>/dev/null || true)
[[ -n $PORT ]] || { say "backupd did not start; see $LOGS/backupd.log"; exit 1; }
say "backupd listens on 127.0.0.1:$PORT"
HTTP_PORT=$(tr -dc 0-9 <"$DEMO/http-port" 2>/dev/null || true)
[[ -n $HTTP_PORT ]] && say "status page: http://127.0.0.1:$HTTP_PORT/ (metrics on /metrics)"
BKPTOOL=("$BUILD/tools/bkptool" --server "$STATE/control.sock")
for r in 1 2; do
  root=$R1
  [[ $r == 2 ]] && root=$R2
  "${BKPTOOL[@]}" replica add "$("$BUILD/replicator/replicator" --root "$root" --show-id)" \
    --name "r$r"
  start "replicator$r" "$BUILD/replicator/replicator" --server "127.0.0.1:$PORT" \
    --server-id "$SERVER_ID" --root "$root" --name "r$r"
done

# --- an application directory with some data before backupfs arrives (the baseline) ----------
mkdir -p "$APP/docs" "$APP/db"
for i in $(seq 1 50); do head -c $((RANDOM % 8192 + 1)) /dev/urandom >"$APP/docs/doc$i.txt"; done
head -c $((64 << 20)) /dev/urandom >"$APP/db/large.db"
say "seeded $APP: 50 small files and a 64 MiB database file"

start backupfs "$BUILD/fs/backupfs" "$APP" --listen 127.0.0.1:0 --port-file "$DEMO/node-port" \
  --host "$NAME" --server-id "$SERVER_ID" --state-dir "$DEMO/node-state" -f
FS_PID=${PIDS[-1]}
unset 'PIDS[-1]'  # stopped by unmounting, not by a signal
for _ in $(seq 200); do is_mounted "$APP" && [[ -s $DEMO/node-port ]] && break; sleep 0.1; done
is_mounted "$APP" || { say "backupfs did not mount; see $LOGS/backupfs.log"; exit 1; }
NODE_PORT=$(tr -dc 0-9 <"$DEMO/node-port")
say "backupfs mounted over $APP, listening on 127.0.0.1:$NODE_PORT"

"${BKPTOOL[@]}" register "$ADDRESS" "$NODE_PORT" "$APP" --every 5s

# One progress line every 3 s from `bkptool status --json`: the node's lag, each replica's lag,
# the file in transfer and the last snapshot (`bkptool status` shows the same as a block).
progress() {
  "${BKPTOOL[@]}" --json status "$NAME" "$APP" 2>/dev/null | python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)["volumes"][0]
except Exception:
    sys.exit(0)
mib = lambda b: b / 1048576
reps = ", ".join("%s %.1f MiB / %.1f s" % (r["name"], mib(r["lag_bytes"]), r["lag_seconds"])
                 for r in v.get("replicas", []))
snap = (v.get("last_snapshot") or {}).get("name") or "none yet"
moving = (v.get("transfer") or {}).get("file") or v.get("current_file")
print("[demo] node %s, lag %d ops / %.1f MiB / %.1f s%s; replicas: %s; last snapshot %s" % (
    "connected" if v.get("connected") else "away", v.get("lag_ops", 0), mib(v.get("lag_bytes", 0)),
    v.get("lag_seconds", 0), ", moving " + moving if moving else "", reps or "none", snap))'
}

# --- the application at work -----------------------------------------------------------------
say "writing for $DURATION s: new files, 1 MiB edits inside db/large.db, renames, deletes"
created=0 edited=0 renamed=0 deleted=0 next=51
end=$((SECONDS + DURATION))
next_progress=$SECONDS
while ((SECONDS < end)); do
  head -c $((RANDOM % 65536 + 1)) /dev/urandom >"$APP/docs/doc$next.txt"
  next=$((next + 1)) created=$((created + 1))
  dd if=/dev/urandom of="$APP/db/large.db" bs=1M count=1 seek=$((RANDOM % 64)) conv=notrunc \
    status=none
  edited=$((edited + 1))
  victim=$APP/docs/doc$((RANDOM % next)).txt
  if [[ -e $victim ]]; then
    if ((RANDOM % 2)); then
      mv "$victim" "${victim%.txt}-renamed$next.txt"
      renamed=$((renamed + 1))
    else
      rm "$victim"
      deleted=$((deleted + 1))
    fi
  fi
  newest=$APP/docs/doc$((next - 1)).txt
  if ((created % 25 == 0)) && [[ -e $newest ]]; then
    mkdir -p "$APP/archive/batch$created"
    mv "$newest" "$APP/archive/batch$created/"
  fi
  sleep 0.05
  if ((SECONDS >= next_progress)); then progress || true; next_progress=$((SECONDS + 3)); fi
done
say "writer done: $created created, $edited edits of 1 MiB, $renamed renamed, $deleted deleted"

# --- convergence -------------------------------------------------------------------------------
MIRROR=$(ls -d "$STATE"/volumes/"$NAME"/*/mirror 2>/dev/null | head -n 1 || true)
COPY1=$(ls -d "$R1/$NAME"/*/ 2>/dev/null | head -n 1 || true)  # ROOT/<host>/<escaped path>
COPY2=$(ls -d "$R2/$NAME"/*/ 2>/dev/null | head -n 1 || true)
TREECMP=$BUILD/tests/bkp_treecmp
compare() {
  if [[ -x $TREECMP ]]; then
    "$TREECMP" "$APP" "$MIRROR" "$COPY1" "$COPY2"
  else
    diff -r --no-dereference "$APP" "$COPY1" && diff -r --no-dereference "$APP" "$COPY2"
  fi
}
say "waiting for the mirror and both replicas to converge"
t0=$SECONDS
converged=0
for _ in $(seq 600); do  # at most ~180 s
  MIRROR=${MIRROR:-$(ls -d "$STATE"/volumes/"$NAME"/*/mirror 2>/dev/null | head -n 1 || true)}
  if [[ -n $MIRROR ]] && compare >"$DEMO/last-diff" 2>&1; then
    converged=1 converge_s=$((SECONDS - t0))
    break
  fi
  sleep 0.3
done

# A run that started in a later second than the one convergence was seen in (started_at has
# whole seconds) cut a mirror holding everything the writer did: `history` then covers it.
# Prints that run, or fails while there is none (a failed run does not count).
run_after() {  # epoch-seconds
  "${BKPTOOL[@]}" --json history "$NAME" "$APP" 2>/dev/null | python3 -c '
import calendar, json, sys, time
after = int(sys.argv[1])
for run in json.load(sys.stdin).get("runs", []):
    started = calendar.timegm(time.strptime(run["started_at"], "%Y-%m-%dT%H:%M:%SZ"))
    if started > after and run["status"] != "failed":
        print("%s (%s)" % (run["started_at"], run["status"]))
        sys.exit(0)
sys.exit(1)' "$1"
}
SNAPSHOT_RUN=
if ((converged)); then
  converged_at=$(date +%s)
  say "waiting for a scheduled run that starts after the volume converged"
  for _ in $(seq 300); do  # at most ~60 s: the period is 5 s
    SNAPSHOT_RUN=$(run_after "$converged_at") && break
    sleep 0.2
  done
  [[ -n $SNAPSHOT_RUN ]] && say "the run started at $SNAPSHOT_RUN covers the converged volume"
fi
echo
say "bkptool status $NAME $APP:"
"${BKPTOOL[@]}" status "$NAME" "$APP" || true
echo
say "bkptool history $NAME $APP:"
"${BKPTOOL[@]}" history "$NAME" "$APP" || true
echo
echo "================ backupfs demo summary ================"
echo "source      $APP"
echo "mirror      ${MIRROR:-<none>}"
echo "replicas    $COPY1"
echo "            $COPY2"
echo "writer      $DURATION s: $created files created, $edited x 1 MiB edits," \
  "$renamed renames, $deleted deletes"
if [[ -x $TREECMP ]]; then
  echo "source      $("$TREECMP" --stats "$APP")"
fi
if [[ -n $MIRROR && -f ${MIRROR%/mirror}/stats ]]; then
  echo "server      $(tr '\n' ' ' <"${MIRROR%/mirror}/stats")"
fi
if ((converged)) && [[ -n $SNAPSHOT_RUN ]]; then
  echo "result      CONVERGED $converge_s s after the writer stopped: mirror and both"
  echo "            replicas equal the source (content, type, mode, owner, symlinks,"
  echo "            hard links, mtime); the run started at $SNAPSHOT_RUN covers it"
  echo "======================================================="
elif ((converged)); then
  echo "result      CONVERGED, but no scheduled run started within 60 s after that"
  echo "======================================================="
  exit 1
else
  echo "result      NOT CONVERGED within 180 s; first differences:"
  sed 's/^/            /' "$DEMO/last-diff" | head -n 10
  echo "======================================================="
  exit 1
fi
