#!/usr/bin/env bash
# A local demo of backupfs in its real shape, on 127.0.0.1: backupd, --replicas
# replicators and --apps application directories on node hosts (web1, web2, db1,
# ...: backupfs --host), each mounted with backupfs, registered with bkptool and
# changed by its own writer for --duration seconds. While they write, the demo
#   - stops the replicator holding the most copies; backupd.toml gives it a grace
#     of 10 s, after which backupd places its copies on the others,
#   - adds one more application, on a new host, live,
#   - brings the replicator back, which is told to delete the copies it lost.
# Then it waits until every copy of every volume equals its source, and ends with
# `bkptool list`, the history of one volume, where every copy is placed, and a
# byte-for-byte check of each copy (mirror and replicas) against its source.
#
#   bash scripts/demo.sh [--duration S] [--apps N] [--replicas M]
#                        [--dir DIR] [--build-dir DIR] [--scale-out]
#
# Defaults: 30 s, 3 apps (and the one added live), 3 replicators. All of it lives
# in --dir (default ./demo-state, recreated on each run), daemon logs in DIR/logs.
# --scale-out keeps backupd's catalog in a PostgreSQL server and its snapshots in
# a one-node Ceph radosgw (S3), both started in DIR (tests/scale/) and stopped,
# and runs a second backupd on them: once the apps run, it is killed (kill -9)
# and the first takes its volumes over, seeding their mirrors from snapshots.
# Without --build-dir it first runs scripts/setup.sh, which installs packages and
# builds only what the demo runs. Ctrl-C stops it cleanly: every mount unmounted,
# every process it started stopped. (Lines 2-25 are --help, at most 80 columns.)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

DURATION=30
APPS=3
REPLICAS=3
DEMO=$REPO/demo-state
BUILD=
SCALE_OUT=
while (($#)); do
  case $1 in
    --dir) DEMO=$(realpath -m "${2:?--dir needs a directory}"); shift 2 ;;
    --build-dir) BUILD=$(realpath "${2:?--build-dir needs a directory}"); shift 2 ;;
    --duration) DURATION=${2:?--duration needs a number of seconds}; shift 2 ;;
    --apps) APPS=${2:?--apps needs a number}; shift 2 ;;
    --replicas) REPLICAS=${2:?--replicas needs a number}; shift 2 ;;
    --scale-out) SCALE_OUT=1; shift ;;
    -h|--help) sed -n '2,25s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
whole() {  # option value least
  [[ $2 =~ ^[0-9]+$ ]] && (($2 >= $3)) && return
  echo "demo.sh: $1 must be a whole number, at least $3" >&2
  exit 2
}
whole --duration "$DURATION" 5  # time to stop a replicator and add an app while they write
whole --apps "$APPS" 1
whole --replicas "$REPLICAS" 2  # one stops: its copies need another replicator to go to

if [[ -z $BUILD ]]; then
  bash scripts/setup.sh ${SCALE_OUT:+--scale-out}
  BUILD=$REPO/build
fi
T0=$EPOCHSECONDS  # the clock every line starts with: the demo's, not the build's
STATE=$DEMO/server
STATE2=$DEMO/server-2  # --scale-out: the second backupd's
LOGS=$DEMO/logs
RUN=$DEMO/run  # port files, writer results
GRACE=10       # backupd.toml replica_grace_seconds
LEASE=5        # --scale-out: backupd.toml lease_seconds (a dead server's volumes move after it)
COPIES=$((REPLICAS < 3 ? REPLICAS : 3))  # the mirror + up to 2 replicas, as by default
HOSTS=(web1 web2 db1)
LIVE_HOST=web3  # the node that joins while the demo runs
# The operator's own identity: the replicators serve it their snapshot copies for restores.
BKPTOOL=("$BUILD/tools/bkptool" --server "$STATE/control.sock" --identity "$DEMO/operator/identity.pem")
TREECMP=$BUILD/tests/bkp_treecmp

# Every line the demo prints is at most 80 columns: [m:ss] and a short message.
clock() { printf '%d:%02d' $((($1 - T0) / 60)) $((($1 - T0) % 60)); }  # epoch-seconds
say() { printf '[%s] %s\n' "$(clock "$EPOCHSECONDS")" "$*"; }
counted() { (($1 == 1)) && echo "$1 $2" || echo "$1 $3"; }  # n singular plural

mounts_under() {  # every mount point under $1/
  awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo
}

# --- leftovers of an interrupted earlier run ---------------------------------------------------
for m in $(mounts_under "$DEMO"); do
  say "unmounting a leftover mount on $m"
  fusermount3 -u "$m" || fusermount3 -u -z "$m"
done
if [[ -n $(mounts_under "$DEMO") ]]; then
  say "something is still mounted under $DEMO; refusing to delete it" >&2
  exit 1
fi
if [[ -e $DEMO ]]; then
  say "removing the previous run in $DEMO"
  rm -rf "$DEMO"
fi
mkdir -p "$STATE" "$LOGS" "$RUN"

# --- process bookkeeping: only our own PIDs, stopped in order on any exit -----------------------
declare -A REPLICATOR_PID=() FS_PID=() WRITER_PID=()
APP_DIRS=()  # in the order they were mounted
BACKUPD_PID= BACKUPD2_PID=

wait_gone() {  # pid seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

stop_pids() {  # pid...: SIGTERM to all, then SIGKILL to any left after 10 s
  local pid
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait_gone "$pid" 10 || kill -9 "$pid" 2>/dev/null || true; done
}

cleanup() {
  local status=$? pid dir
  trap - EXIT INT TERM
  set +e  # stop everything, whatever fails on the way
  exec 1>&3 2>&4  # Ctrl-C may come while a function's output goes to a file
  for pid in "${WRITER_PID[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Unmounting stops each backupfs after it has shipped what is left.
  ((${#APP_DIRS[@]})) && say "unmounting ${#APP_DIRS[@]} application directories"
  for dir in "${APP_DIRS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      fusermount3 -u "$dir" 2>/dev/null && break
      sleep 0.5
    done
  done
  for pid in "${FS_PID[@]}"; do wait_gone "$pid" 15 || stop_pids "$pid"; done
  for dir in $(mounts_under "$DEMO"); do fusermount3 -u -z "$dir" 2>/dev/null || true; done
  say "stopping the replicators and backupd"
  stop_pids "${REPLICATOR_PID[@]}" $BACKUPD_PID $BACKUPD2_PID
  if [[ -n $SCALE_OUT ]]; then
    say "stopping PostgreSQL and Ceph"
    bash "$REPO/tests/scale/postgres.sh" stop "$DEMO/postgres" >>"$LOGS/scale-out.log" 2>&1
    bash "$REPO/tests/scale/ceph.sh" stop "$DEMO/ceph" >>"$LOGS/scale-out.log" 2>&1
  fi
  say "stopped; trees and logs are in $DEMO"
  exit "$status"
}
exec 3>&1 4>&2
trap cleanup EXIT
trap 'echo; say "interrupted"; exit 130' INT TERM

# Daemons run in their own session so Ctrl-C reaches only this script, which then stops them
# in order (unmount first, so backupfs ships what is left). Prints the PID.
spawn() {  # log-name command...
  local log=$LOGS/$1.log
  shift
  setsid "$@" >>"$log" 2>&1 &
  echo $!
}

wait_for_file() {  # file seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [[ -s $1 ]] && return 0
    sleep 0.1
  done
  return 1
}

# --- backupd, with a short grace for replicators that go away -----------------------------------
# Every link is TLS with identities: each daemon makes its own and prints it with --show-id;
# the nodes and the replicators are told backupd's, and backupd is told the replicators' (bkptool
# replica add), as an operator enrols them. bkptool talks to backupd over its control socket.
cat >"$DEMO/backupd.toml" <<EOF
# Written by scripts/demo.sh: a replicator away for $GRACE s loses its copies to another.
state_dir = "$STATE"
listen = "127.0.0.1:0"
control_socket = "$STATE/control.sock"
http_listen = "127.0.0.1:0"
copies = $COPIES
replica_grace_seconds = $GRACE
EOF
if [[ -n $SCALE_OUT ]]; then
  # The catalog in PostgreSQL and the snapshots in S3, as several servers would share them.
  say "starting PostgreSQL and a one-node Ceph with radosgw (tests/scale/)"
  bash "$REPO/tests/scale/postgres.sh" start "$DEMO/postgres" >>"$LOGS/scale-out.log" 2>&1 ||
    { say "PostgreSQL did not start; see $LOGS/scale-out.log"; exit 1; }
  bash "$REPO/tests/scale/ceph.sh" start "$DEMO/ceph" >>"$LOGS/scale-out.log" 2>&1 ||
    { say "Ceph did not start; see $LOGS/scale-out.log"; exit 1; }
  (
    source "$DEMO/ceph/env"
    umask 077
    printf 'endpoint = "%s"\nregion = "%s"\naccess_key = "%s"\nsecret_key = "%s"\n' \
      "$S3_ENDPOINT" "$S3_REGION" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$DEMO/s3.toml"
  )
  cat >>"$DEMO/backupd.toml" <<EOF
catalog = "$(sed -n 's/^BKP_TEST_POSTGRES_URL=//p' "$DEMO/postgres/env")"
lease_seconds = $LEASE
snapshot_store = "s3://demo/backups"
snapshot_store_credentials = "$DEMO/s3.toml"
EOF
  # Server 2: the same catalog and bucket, a state of its own, no status page.
  mkdir -p "$STATE2"
  sed -e "s|^state_dir = .*|state_dir = \"$STATE2\"|" \
    -e "s|^control_socket = .*|control_socket = \"$STATE2/control.sock\"|" \
    -e 's|^http_listen = .*|http_listen = "off"|' "$DEMO/backupd.toml" >"$DEMO/backupd-2.toml"
  echo 'server_name = "backup-2"' >>"$DEMO/backupd-2.toml"
  echo 'server_name = "backup-1"' >>"$DEMO/backupd.toml"
  say "catalog in PostgreSQL, snapshots in s3://demo/backups, leases of $LEASE s"
fi
SERVER_ID=$("$BUILD/server/backupd" --config "$DEMO/backupd.toml" --show-id)
BACKUPD_PID=$(spawn backupd "$BUILD/server/backupd" --config "$DEMO/backupd.toml" \
  --port-file "$RUN/backupd.port" --http-port-file "$RUN/http.port")
wait_for_file "$RUN/backupd.port" 20 ||
  { say "backupd did not start; see $LOGS/backupd.log"; exit 1; }
PORT=$(tr -dc 0-9 <"$RUN/backupd.port")
say "backupd listens on 127.0.0.1:$PORT, identity ${SERVER_ID:0:14}..."
wait_for_file "$RUN/http.port" 5 &&
  say "status page: http://127.0.0.1:$(tr -dc 0-9 <"$RUN/http.port")/ (and /metrics)"
SERVER_IDS=(--server-id "$SERVER_ID")  # the backupd servers nodes and replicators accept
SERVERS=(--server "127.0.0.1:$PORT")   # the ones replicators follow
if [[ -n $SCALE_OUT ]]; then
  SERVER2_ID=$("$BUILD/server/backupd" --config "$DEMO/backupd-2.toml" --show-id)
  BACKUPD2_PID=$(spawn backupd-2 "$BUILD/server/backupd" --config "$DEMO/backupd-2.toml" \
    --port-file "$RUN/backupd-2.port")
  wait_for_file "$RUN/backupd-2.port" 20 ||
    { say "backupd-2 did not start; see $LOGS/backupd-2.log"; exit 1; }
  PORT2=$(tr -dc 0-9 <"$RUN/backupd-2.port")
  say "backupd-2 listens on 127.0.0.1:$PORT2 on the same catalog and bucket"
  SERVER_IDS+=(--server-id "$SERVER2_ID")
  SERVERS+=(--server-id "$SERVER2_ID" --server "127.0.0.1:$PORT2")
fi

# --- the replicators ---------------------------------------------------------------------------
OPERATOR_ID=$("${BKPTOOL[@]}" --show-id | head -1)
start_replicator() {  # name
  REPLICATOR_PID[$1]=$(spawn "$1" "$BUILD/replicator/replicator" "${SERVERS[@]}" \
    --server-id "$SERVER_ID" --root "$DEMO/replicas/$1" --name "$1" \
    --listen 127.0.0.1:0 --listen-port-file "$RUN/$1.listen" --operator-id "$OPERATOR_ID")
}
for ((r = 1; r <= REPLICAS; r++)); do
  mkdir -p "$DEMO/replicas/r$r"
  "${BKPTOOL[@]}" -q replica add \
    "$("$BUILD/replicator/replicator" --root "$DEMO/replicas/r$r" --show-id)" --name "r$r"
  start_replicator "r$r"
done
say "$REPLICAS replicators r1..r$REPLICAS;" \
  "each volume kept as the mirror + $(counted $((COPIES - 1)) replica replicas)"

# --- the applications --------------------------------------------------------------------------
# App i lives on host HOSTS[(i-1) % 3] in DEMO/<host>/app<i>: the volume <host>:DEMO/<host>/app<i>.
# Each host's backupfs instances share that host's state directory (its identity), as the
# units on one machine do.
seed() {  # dir: data that is there before backupfs mounts (the baseline)
  local i
  mkdir -p "$1/docs" "$1/db"
  for i in $(seq 1 40); do head -c $((RANDOM % 8192 + 1)) /dev/urandom >"$1/docs/doc$i.txt"; done
  head -c $((16 << 20)) /dev/urandom >"$1/db/data.db"
}

# The application at work until the epoch second $2: new files, 256 KiB edits inside its
# database file, renames, deletes, a new directory now and then. Writes its counts to $3.
writer() {  # dir end-epoch result-file
  local dir=$1 n=0 created=0 edited=0 renamed=0 deleted=0 victim
  while ((EPOCHSECONDS < $2)); do
    n=$((n + 1))
    head -c $((RANDOM % 32768 + 1)) /dev/urandom >"$dir/docs/new$n.txt"
    created=$((created + 1))
    dd if=/dev/urandom of="$dir/db/data.db" bs=256K count=1 seek=$((RANDOM % 64)) \
      conv=notrunc status=none
    edited=$((edited + 1))
    victim=$dir/docs/doc$((RANDOM % 40 + 1)).txt
    if [[ -e $victim ]] && ((RANDOM % 2)); then
      mv "$victim" "$dir/docs/renamed$n.txt"
      renamed=$((renamed + 1))
    elif [[ -e $victim ]]; then
      rm "$victim"
      deleted=$((deleted + 1))
    fi
    if ((n % 25 == 0)); then
      mkdir -p "$dir/archive/$n"
      mv "$dir/docs/new$n.txt" "$dir/archive/$n/"
    fi
    sleep 0.1
  done
  echo "$created created, $edited edits of 256 KiB, $renamed renamed, $deleted deleted" >"$3"
}

# Seeds DEMO/<host>/<app>, mounts backupfs over it as <host>, registers it with backupd
# (a snapshot every 10 s) and starts its writer until END.
add_app() {  # host app
  local host=$1 app=$2 dir=$DEMO/$1/$2 port_file=$RUN/$1-$2.port
  mkdir -p "$dir" "$DEMO/node-state/$host"
  seed "$dir"
  FS_PID[$dir]=$(spawn "$host-$app" "$BUILD/fs/backupfs" "$dir" --listen 127.0.0.1:0 \
    --port-file "$port_file" --host "$host" "${SERVER_IDS[@]}" \
    --state-dir "$DEMO/node-state/$host" -f)
  APP_DIRS+=("$dir")
  wait_for_file "$port_file" 20 && mountpoint -q "$dir" ||
    { say "backupfs did not mount $dir; see $LOGS/$host-$app.log"; exit 1; }
  "${BKPTOOL[@]}" register 127.0.0.1 "$(tr -dc 0-9 <"$port_file")" "$dir" --every 10s \
    >>"$LOGS/bkptool.log" 2>&1 || { say "register $dir failed; see $LOGS/bkptool.log"; exit 1; }
  writer "$dir" "$END" "$RUN/$host-$app.writer" &
  WRITER_PID[$dir]=$!
  say "$host: $app mounted, registered and writing (16 MiB + 40 files to start)"
}

# What backupd says, as `bkptool --json status` (every volume, the replicators).
status_json() { "${BKPTOOL[@]}" --json status 2>/dev/null; }

# Reads the status JSON on stdin and prints what the mode asks for (see each branch).
VIEW=$(cat <<'EOF'
import json, os, subprocess, sys
mode, args = sys.argv[1], sys.argv[2:]
try:
    doc = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
vols = sorted(doc.get("volumes", []), key=lambda v: (v["host"], v["path"]))
reps = doc.get("replicators", [])
label = lambda v: "%s:.../%s" % (v["host"], os.path.basename(v["path"]))
mib = lambda b: "%.1f MiB" % (b / 1048576)
placed = lambda v: [c["name"] for c in v["copies"] if c["name"] != "mirror"]
if mode == "progress":  # one line: copies current, node lag, replicators up
    print("%d volume%s, copies %d/%d current, node lag %s, replicators %d/%d up" % (
        len(vols), "" if len(vols) == 1 else "s", sum(v["copies_current"] for v in vols),
        sum(v["copies_wanted"] for v in vols), mib(sum(v["lag_bytes"] for v in vols)),
        sum(r["connected"] for r in reps), len(reps)))
elif mode == "busiest":  # the connected replicator holding the most copies, and how many
    r = max((r for r in reps if r["connected"]), key=lambda r: (r["copies"], r["name"]))
    print(r["name"], r["copies"])
elif mode == "holds":  # the volumes (labels) whose copies include replicator args[0]
    print(" ".join(label(v) for v in vols if args[0] in placed(v)))
elif mode == "settled":  # exit 0 when every volume has all the copies it wants, current
    sys.exit(0 if vols and all(v["copies_current"] == v["copies_wanted"] and
                               v["connected"] for v in vols) else 1)
elif mode == "copies":  # per volume: label, source, then each copy as NAME=DIR
    state, replicas = args  # backupd's state directory; where the replicators' roots are
    for v in vols:
        esc = subprocess.run(["systemd-escape", "--path", v["path"]], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirs = ["mirror=%s/volumes/%s/%s/mirror" % (state, v["host"], esc)]
        dirs += ["%s=%s/%s/%s/%s" % (r, replicas, r, v["host"], esc) for r in placed(v)]
        print(label(v), v["path"], *dirs)
elif mode == "placement":  # the table at the end
    print("  %-16s %s" % ("volume", "copies (state)"))
    for v in vols:
        print("  %-16s %s" % (label(v), ", ".join(
            "%s (%s)" % (c["name"], c["state"]) for c in v["copies"])))
    print()
    print("  %-9s %-5s %6s %12s %12s %11s" % (
        "replicator", "up", "copies", "stored", "free", "round trip"))
    for r in reps:
        print("  %-10s %-5s %6d %12s %12s %8.1f ms" % (
            r["name"], "yes" if r["connected"] else "no", r["copies"], mib(r["stored_bytes"]),
            "%.1f GiB" % (r["free_bytes"] / 2**30), r["round_trip_ms"]))
    print("  (stored: as each replicator last counted its root; it recounts every 60 s)")
EOF
)
# Python without site packages (the standard library is all it needs, and it starts faster);
# its errors, a KeyboardInterrupt at Ctrl-C too, go to the demo's own log.
py() { python3 -S -c "$@" 2>>"$LOGS/demo.log"; }
view() { status_json | py "$VIEW" "$@"; }

# bkptool's tables as they are, folded for 80 columns: a table wider than that is cut between
# columns into parts that each repeat its first column, and a cell still too long wraps within
# its column; other long lines wrap.
FIT=$(cat <<'EOF'
import re, sys, textwrap
W = 80
for block in re.split(r"\n\s*\n", sys.stdin.read().strip("\n")):
    lines = block.split("\n")
    n = max(map(len, lines))
    if n <= W or len(lines) < 2:
        for line in lines:
            print(textwrap.fill(line, W, subsequent_indent="  ") if line else line)
        print()
        continue
    grid = [line.ljust(n) for line in lines]
    filled = "".join(" " if all(g[i] == " " for g in grid) else "x" for i in range(n))
    spans = [m.span() for m in re.finditer(r"x+(?: x+)*", filled)]  # columns: 2+ spaces apart
    first, parts, part = spans[0], [], []
    for span in spans[1:]:
        if part and sum(e - b + 2 for b, e in [first] + part + [span]) - 2 > W:
            parts.append(part)
            part = []
        part.append(span)
    parts.append(part)
    for part in parts:
        cells = [first] + part
        indent = " " * sum(e - b + 2 for b, e in cells[:-1])
        for g in grid:
            row = "  ".join(g[b:e] for b, e in cells).rstrip()
            print(textwrap.fill(row, W, subsequent_indent=indent) if len(row) > W else row)
        print()
EOF
)
fit() { py "$FIT"; }

START=$EPOCHSECONDS
END=$((START + DURATION))
for ((i = 1; i <= APPS; i++)); do add_app "${HOSTS[(i - 1) % 3]}" "app$i"; done

# --- --scale-out: backupd-2 dies, backupd takes its volumes over ------------------------------
# Once every volume is served and has a snapshot in the bucket, kill -9 of backupd-2: when its
# leases expire, backupd seeds each mirror it never had from the volume's newest snapshot and
# dials the node, which sends what changed since (README, "Running more than one server").
served_by() {  # "volume=server" for each volume, as `bkptool --json list` says
  "${BKPTOOL[@]}" --json list 2>/dev/null | py '
import json, sys
for v in json.load(sys.stdin)["volumes"]:
    print("%s=%s" % (v["path"], v.get("served_by") or ""))'
}
if [[ -n $SCALE_OUT ]]; then
  moved=0
  for ((t = 0; t < 60; t++)); do
    owners=$(served_by) || owners=
    moved=$(grep -c '=backup-2$' <<<"$owners" || true)
    snapshotted=1
    for dir in "${APP_DIRS[@]}"; do
      host=${dir%/*} host=${host##*/}
      "${BKPTOOL[@]}" --json snapshots "$host" "$dir" 2>/dev/null |
        py 'import json,sys; sys.exit(0 if json.load(sys.stdin)["snapshots"] else 1)' ||
        snapshotted=0
    done
    ! grep -q '=$' <<<"$owners" && [[ -n $owners ]] && ((snapshotted)) && break
    sleep 1
  done
  say "backupd-2 serves $(counted "$moved" volume volumes) of ${#APP_DIRS[@]}; kill -9 of backupd-2"
  kill -9 "$BACKUPD2_PID" 2>/dev/null || true
  wait_gone "$BACKUPD2_PID" 10 || true
  BACKUPD2_PID=
  killed=$EPOCHSECONDS
  for ((t = 0; t < 90; t++)); do
    owners=$(served_by) || owners=
    [[ -n $owners ]] && ! grep -qv '=backup-1$' <<<"$owners" && view settled && break
    sleep 1
  done
  say "backupd serves all ${#APP_DIRS[@]} volumes again, every copy current, $((EPOCHSECONDS - killed)) s" \
    "after the kill; $(grep -c 'mirror seeded from snapshot' "$LOGS/backupd.log" || true) mirror(s)" \
    "seeded from the bucket"
fi

# --- the story, one step per second while the writers write ----------------------------------
# Stop the busiest replicator early (its grace should run out while the apps write), add the
# live app a third of the way in, bring the replicator back once none of its copies is placed
# on it any more (backupd drops them once the copies are current elsewhere), and see that it
# deleted them. The writers stop at END; the story goes on until the replicator is back.
STOP_AT=$((START + (DURATION + 5) / 6))
ADD_AT=$((START + (DURATION + 2) / 3))
STOPPED= held=0 LOST= STOPPED_AT= BACK_AT= DELETED_AT= ADDED=0
next_progress=$EPOCHSECONDS
deadline=$((END + 180))
while ((EPOCHSECONDS < deadline)); do
  if [[ -z $STOPPED ]] && ((EPOCHSECONDS >= STOP_AT)); then
    read -r STOPPED held < <(view busiest) || true
    if [[ -n $STOPPED ]] && ((held > 0)); then
      LOST=$(view holds "$STOPPED")
      stop_pids "${REPLICATOR_PID[$STOPPED]}"
      unset "REPLICATOR_PID[$STOPPED]"
      STOPPED_AT=$EPOCHSECONDS
      say "stopped replicator $STOPPED, which holds $(counted "$held" copy copies);" \
        "backupd waits $GRACE s"
    else
      STOPPED=  # no copy is placed yet: try again next second
    fi
  fi
  if ((!ADDED && EPOCHSECONDS >= ADD_AT && EPOCHSECONDS < END)); then
    add_app "$LIVE_HOST" "app$((APPS + 1))"
    ADDED=1
  fi
  if [[ -n $STOPPED && -z $BACK_AT ]] && holding=$(view holds "$STOPPED") && [[ -z $holding ]]
  then
    say "$STOPPED's copies are current elsewhere after $((EPOCHSECONDS - STOPPED_AT)) s;" \
      "it comes back"
    start_replicator "$STOPPED"
    BACK_AT=$EPOCHSECONDS
  fi
  if [[ -n $BACK_AT && -z $DELETED_AT ]]; then
    left=0
    for dir in "$DEMO/replicas/$STOPPED"/*/*; do [[ -e $dir ]] && left=$((left + 1)); done
    if ((left == 0)); then
      DELETED_AT=$EPOCHSECONDS
      say "$STOPPED deleted the copies it lost, $((DELETED_AT - BACK_AT)) s after coming back"
    fi
  fi
  if ((EPOCHSECONDS >= next_progress)); then
    line=$(view progress) && say "$line"
    next_progress=$((EPOCHSECONDS + 5))
  fi
  if ((EPOCHSECONDS >= END && ${#WRITER_PID[@]})); then
    wait "${WRITER_PID[@]}" || say "a writer failed (a missing count below says which)"
    WRITER_PID=()
    say "writers done"
  fi
  if ((EPOCHSECONDS >= END)) && [[ -n $DELETED_AT ]]; then break; fi
  sleep 1
done

# --- convergence: every copy of every volume equals its source ---------------------------------
# Compared through the mount (what the application sees) with bkp_treecmp: names, types, modes,
# owners, sizes, symlinks, hard links, mtimes, xattrs, holes and content.
verify() {  # prints one line per volume; fails if any copy differs (the first difference of
  local label src rest copy ok=0 names dirs out  # each such volume goes to RUN/diff)
  : >"$RUN/diff"
  while read -r label src rest; do
    names=() dirs=()
    for copy in $rest; do names+=("${copy%%=*}") dirs+=("${copy#*=}"); done
    if out=$("$TREECMP" "$src" "${dirs[@]}" 2>&1); then
      printf '  %-16s %s: equal\n' "$label" "${names[*]}"
    else
      printf '  %-16s %s: DIFFERENT\n' "$label" "${names[*]}"
      printf '%s: %s\n' "$label" "$out" >>"$RUN/diff"
      ok=1
    fi
  done < <(view copies "$STATE" "$DEMO/replicas")
  return "$ok"
}
say "waiting until every copy is current and equals its source"
t0=$EPOCHSECONDS
converged=0
while ((EPOCHSECONDS < t0 + 180)); do
  if verify >"$RUN/verify" 2>&1 && view settled; then converged=1; break; fi
  sleep 1
done
((converged)) && say "converged: every copy equals its source (writers stopped at $(clock "$END"))"

echo
say "bkptool list"
"${BKPTOOL[@]}" list | fit || true
first=${APP_DIRS[0]}
say "bkptool history ${HOSTS[0]} .../${first##*/}"
"${BKPTOOL[@]}" history "${HOSTS[0]}" "$first" --limit 5 | fit || true
say "placement (from bkptool --json status)"
view placement || true
echo
say "every copy against its source (bkp_treecmp)"
cat "$RUN/verify"
echo

# --- a restore from every copy at once ---------------------------------------------------------
# A snapshot of the converged tree now (bkptool run), then its restore: parts come from backupd
# and from every replicator that already holds a copy of it, each part checked by its digest.
say "bkptool run ${HOSTS[0]} .../${first##*/}, then restore it from every copy"
"${BKPTOOL[@]}" run "${HOSTS[0]}" "$first" 2>&1 | fit || true
for ((t = 0; t < 30; t++)); do  # the replicas receive the new snapshot between batches
  [[ $("${BKPTOOL[@]}" --json snapshots "${HOSTS[0]}" "$first" 2>/dev/null |
       py 'import json,sys; print(len(json.load(sys.stdin)["snapshots"][0]["holders"]))') \
     == "$COPIES" ]] && break
  sleep 1
done
RESTORED=$DEMO/restored/${first##*/}
restore_ok=0
if "${BKPTOOL[@]}" -q --json restore "${HOSTS[0]}" "$first" --to "$RESTORED" >"$RUN/restore.json" \
    2>>"$LOGS/bkptool.log"; then
  py '
import json, sys
doc = json.load(open(sys.argv[1]))
print("  %d files from snapshot %s:" % (doc["files"], doc["snapshot"]["id"]))
for s in doc["sources"]:
    print("  %-10s %3d parts, %7.1f MiB%s" % (s["name"], s["parts"], s["bytes"] / 1048576,
                                            "  (lost: " + s["lost"] + ")" if s["lost"] else ""))
' "$RUN/restore.json"
  if out=$("$TREECMP" "$first" "$RESTORED" 2>&1); then
    echo "  the restored tree equals its source"
    restore_ok=1
  else
    echo "  the restored tree DIFFERS: ${out:0:60}"
  fi
else
  echo "  restore failed; see $LOGS/bkptool.log"
fi
echo
echo "================================ demo summary ================================"
for dir in "${APP_DIRS[@]}"; do
  host=${dir%/*} host=${host##*/}
  printf '%-16s %s\n' "$host:.../${dir##*/}" "$(cat "$RUN/$host-${dir##*/}.writer" 2>/dev/null)"
done
if [[ -n $DELETED_AT ]]; then
  echo "$STOPPED stopped at $(clock "$STOPPED_AT") holding copies of $LOST;" \
    "placed elsewhere after $((BACK_AT - STOPPED_AT)) s (grace $GRACE s); back at" \
    "$(clock "$BACK_AT"); deleted the copies it lost by $(clock "$DELETED_AT")" | fmt -w 78
fi
result=0
if [[ -z $DELETED_AT ]]; then
  echo "result: the stopped replicator's copies did not move and come back deleted;"
  echo "        see $LOGS/${STOPPED:-backupd}.log"
  result=1
elif ((converged && !restore_ok)); then
  echo "result: converged, but the restore from every copy failed or differs"
  result=1
elif ((converged)); then
  echo "result: CONVERGED, every copy of every volume equals its source, and its restore"
else
  echo "result: NOT CONVERGED within 180 s; first difference:"
  head -n 5 "$RUN/diff" | cut -c1-76 | sed 's/^/  /'
  result=1
fi
echo "=============================================================================="
exit "$result"
