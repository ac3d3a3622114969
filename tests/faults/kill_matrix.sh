#!/usr/bin/env bash
# kill_matrix.sh: a long fault run, outside CI. A mixed workload runs through a backupfs mount
# while kill -9s land on all three daemons, their TCP connections are cut and their disks fill
# up, then every copy must converge to the source and no fsync-acknowledged append may be
# missing anywhere.
#
# Why: the integration tests kill each daemon once at a chosen moment (CrashTest, RestartTest)
# and cut a link after a chosen frame (Conn's test seam); this run kills them and cuts their
# links hundreds of times at moments nobody chose - mid-baseline, mid-reconcile, mid-batch,
# mid-handshake, while a replica catches up - which is where exact resume and the reconcile meet.
#
#   bash tests/faults/kill_matrix.sh [--kills N] [--cuts N] [--fulls N] [--minutes M]
#                                    [--build-dir DIR] [--seed S] [--gap MIN:MAX] [--rate OPS]
#                                    [--converge-timeout S] [--keep] [--no-holes]
#
#   --kills N        kill -9s to deliver (default 200), each to backupfs, backupd or one of the
#                    two replicators, drawn at random (seeded) with equal weight per daemon kind
#   --cuts N         connection cuts to deliver (default 0), interleaved with the kills at random
#                    in proportion to what is left of each: one end of the node's link to backupd
#                    or of a replicator's, drawn at random, is aborted with `ss -K` (the kernel
#                    resets the connection, its peer sees ECONNRESET); nobody is restarted, the
#                    daemons must reconnect and resume by themselves. A cut that finds the link
#                    down (still reconnecting) is counted as missed. `--kills 0 --cuts N` is a
#                    connection-cut matrix.
#   --fulls N        full disks to deliver (default 0), interleaved like the cuts: backupd's
#                    state directory (the mirror) or a replicator's root, drawn at random, is
#                    filled to the last byte and freed again 1-5 s later (the workload runs
#                    on). With N > 0 every tree lives on a tmpfs of its own, mounted by this
#                    script (source 2 GiB, state and roots 256 MiB), so a full disk is a real
#                    one and fills no disk of the machine.
#   --minutes M      stop after M minutes even if fewer faults were delivered (default 35); the
#                    summary says how many were
#   --build-dir DIR  build tree with the daemons, bkptool and tests/bkp_treecmp (default: build/)
#   --seed S         seed of the kill schedule and of the workload (default 1)
#   --gap MIN:MAX    seconds between two faults, uniform (default 1:8)
#   --rate OPS       workload operations per second at most (default 100)
#   --converge-timeout S  how long the final convergence may take (default 300)
#   --keep           keep the scratch directory (it is also kept when the run fails)
#   --no-holes       converged = equal except for where files have holes (bkp_treecmp
#                    --no-holes): to tell a hole-map difference from any other when a strict run
#                    fails (a file written while a reconcile ran used to be shipped whole, holes as
#                    zeros: bench/RESULTS.md, "Daemon defects found", fixed since)
#
# How a kill is delivered:
#   backupd     kill -9, then started again on the same port with the same --state-dir
#   replicator  kill -9, then started again with the same --root and --name
#   backupfs    in a cycle of ten: seven times kill -9 of the worker and twice SIGHUP to the
#               keeper (an upgrade), both under the running workload, which must see no error
#               (the keeper keeps the mount, a new worker takes over, fs/keeper.h); once kill -9
#               of the keeper itself, which ends the mount: the workload is paused between two
#               operations first (tests/faults/workload.py), the dead mount unmounted, backupfs
#               mounted again on the same port (backupd reattaches by itself), the workload
#               resumed.
# Before each kill every daemon and the workload must still be alive: a daemon that died on its
# own is a failure (it is logged, restarted, and the run ends FAILED).
#
# At the end the workload stops, and the run waits (bounded) until bkp_treecmp finds the source
# (its real directory, through a bind mount made before backupfs mounted over it), backupd's
# mirror and both replicas equal (content, modes, owners, mtimes, xattrs, hard links, holes);
# then every append the workload was told was durable (fsync returned) must be in all four.
#
# Needs root and /dev/fuse. Works in /var/tmp/bkp-bench-faults.XXXXXX; every process it starts is
# stopped by PID and every mount it made is unmounted (fusermount3 -u, then -u -z) in an EXIT
# trap. Only 127.0.0.1. Exit 0 = PASSED, 1 = FAILED, 2 = usage or setup error.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

KILLS=200
CUTS=0
FULLS=0
MINUTES=35
BUILD_DIR=$REPO/build
SEED=1
GAP=1:8
RATE=100
CONVERGE_TIMEOUT=300
KEEP=0
CMP_OPTS=()
while (($#)); do
  case $1 in
    --kills) KILLS=${2:?}; shift 2 ;;
    --cuts) CUTS=${2:?}; shift 2 ;;
    --fulls) FULLS=${2:?}; shift 2 ;;
    --minutes) MINUTES=${2:?}; shift 2 ;;
    --build-dir) BUILD_DIR=${2:?}; shift 2 ;;
    --seed) SEED=${2:?}; shift 2 ;;
    --gap) GAP=${2:?}; shift 2 ;;
    --rate) RATE=${2:?}; shift 2 ;;
    --converge-timeout) CONVERGE_TIMEOUT=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-holes) CMP_OPTS=(--no-holes); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "kill_matrix: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $KILLS =~ ^[0-9]+$ && $CUTS =~ ^[0-9]+$ && $FULLS =~ ^[0-9]+$ && $MINUTES =~ ^[0-9]+$ && $SEED =~ ^[0-9]+$ && $GAP =~ ^[0-9]+:[0-9]+$ ]] ||
  { echo "kill_matrix: --kills, --cuts, --fulls, --minutes, --seed take numbers, --gap MIN:MAX" >&2; exit 2; }
GAP_MIN=${GAP%:*} GAP_MAX=${GAP#*:}
((GAP_MAX >= GAP_MIN)) || { echo "kill_matrix: --gap MIN:MAX needs MIN <= MAX" >&2; exit 2; }

if [[ $(id -u) -ne 0 || ! -c /dev/fuse ]]; then
  echo "kill_matrix: needs root and /dev/fuse" >&2
  exit 2
fi
if ((CUTS > 0)) && ! command -v ss >/dev/null; then
  echo "kill_matrix: --cuts needs ss (iproute2)" >&2
  exit 2
fi
BUILD_DIR=$(cd "$BUILD_DIR" && pwd)
BACKUPD=$BUILD_DIR/server/backupd
REPLICATOR=$BUILD_DIR/replicator/replicator
BACKUPFS=$BUILD_DIR/fs/backupfs
BKPTOOL=$BUILD_DIR/tools/bkptool
TREECMP=$BUILD_DIR/tests/bkp_treecmp
for b in "$BACKUPD" "$REPLICATOR" "$BACKUPFS" "$BKPTOOL" "$TREECMP"; do
  [[ -x $b ]] || { echo "kill_matrix: $b is missing (build with -DBKP_BUILD_TESTS=ON)" >&2; exit 2; }
done
PY=$(command -v /usr/bin/python3 || command -v python3)

START=$EPOCHREALTIME
log() { printf '[faults %s +%ss] %s\n' "$(date +%H:%M:%S)" "$(elapsed)" "$*" | tee -a "$WORK/run.log" >&2; }
elapsed() { awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%d", b - a }'; }
FAILURES=()
fail() { FAILURES+=("$*"); log "FAILURE: $*"; }

WORK=$(mktemp -d /var/tmp/bkp-bench-faults.XXXXXX)
SRC=$WORK/src          # the application directory, backupfs mounted over it
BARE=$WORK/bare        # bind mount of src made before backupfs: the real files
STATE=$WORK/state
CTL=$WORK/ctl
LOGS=$WORK/logs
mkdir -p "$SRC" "$BARE" "$STATE" "$WORK/r1" "$WORK/r2" "$CTL" "$LOGS"
TMPFS=()  # mounted by us (--fulls), unmounted last

# --- processes and mounts we own -------------------------------------------------------------
BACKUPD_PID='' BACKUPFS_PID='' WORKLOAD_PID=''
REPL_PIDS=("" "")
BOUND=0
alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }
wait_gone() {  # pid seconds
  local i
  for ((i = 0; i < $2 * 20; i++)); do
    alive "$1" || return 0
    sleep 0.05
  done
  return 1
}
reap() { wait "$1" 2>/dev/null || true; }
kill9() {  # pid: SIGKILL and reap, bash's "Killed" notice silenced; 1 if it survived 10 s
  { kill -9 "$1"; wait_gone "$1" 10 && wait "$1"; } 2>/dev/null
  ! alive "$1"
}
stop_pid() {  # pid: SIGTERM, SIGKILL after 15 s
  alive "$1" || { reap "$1"; return 0; }
  kill "$1" 2>/dev/null || true
  wait_gone "$1" 15 || kill9 "$1" || true
  { wait "$1"; } 2>/dev/null || true
}
is_mounted() { awk -v d="$1" '$5 == d { found = 1 } END { exit !found }' /proc/self/mountinfo; }
unmount_src() {  # fusermount3 -u (retried while busy), then -u -z
  local i
  for ((i = 0; i < 20; i++)); do
    is_mounted "$SRC" || return 0
    fusermount3 -u "$SRC" 2>/dev/null && return 0
    sleep 0.5
  done
  fusermount3 -u -z "$SRC" 2>/dev/null || true
  ! is_mounted "$SRC"
}

cleanup() {
  local status=$? i
  trap - EXIT INT TERM
  if alive "$WORKLOAD_PID"; then
    touch "$CTL/stop"
    rm -f "$CTL/pause"
    wait_gone "$WORKLOAD_PID" 10 || kill9 "$WORKLOAD_PID" || true
  fi
  reap "$WORKLOAD_PID"
  if is_mounted "$SRC"; then
    unmount_src || log "cleanup: $SRC is still mounted"
  fi
  if alive "$BACKUPFS_PID"; then wait_gone "$BACKUPFS_PID" 20 || true; fi
  stop_pid "$BACKUPFS_PID"
  for i in 1 0; do stop_pid "${REPL_PIDS[i]}"; done
  stop_pid "$BACKUPD_PID"
  ((BOUND)) && { umount "$BARE" 2>/dev/null || umount -l "$BARE" 2>/dev/null || true; }
  for ((i = ${#TMPFS[@]} - 1; i >= 0; i--)); do
    umount "${TMPFS[i]}" 2>/dev/null || umount -l "${TMPFS[i]}" 2>/dev/null || true
  done
  if ((KEEP)) || ((status != 0)); then
    echo "kill_matrix: scratch directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

read_port() {  # file seconds -> the port written there
  local i p
  for ((i = 0; i < $2 * 20; i++)); do
    p=$(tr -dc 0-9 2>/dev/null <"$1" || true)  # 2> first: a missing file says nothing
    [[ -n $p ]] && { echo "$p"; return 0; }
    sleep 0.05
  done
  return 1
}

# Every link runs TLS with identities, enrolled as an operator would: the node and the
# replicators are told backupd's identity, backupd is told the replicators' (bkptool replica
# add, over its local control socket).
BACKUPD_PORT=0
bkptool() { "$BKPTOOL" --server "$STATE/control.sock" "$@"; }
start_backupd() {
  rm -f "$WORK/backupd.port"
  SERVER_ID=$("$BACKUPD" --state-dir "$STATE" --show-id) || return 1
  setsid "$BACKUPD" --state-dir "$STATE" --listen "127.0.0.1:$BACKUPD_PORT" \
    --port-file "$WORK/backupd.port" --control-socket "$STATE/control.sock" \
    >>"$LOGS/backupd.log" 2>&1 &
  BACKUPD_PID=$!
  local p
  p=$(read_port "$WORK/backupd.port" 20) || return 1
  BACKUPD_PORT=$p
}

start_replicator() {  # index 0|1
  local name=r$(($1 + 1))
  setsid "$REPLICATOR" --server "127.0.0.1:$BACKUPD_PORT" --server-id "$SERVER_ID" \
    --root "$WORK/$name" --name "$name" >>"$LOGS/$name.log" 2>&1 &
  REPL_PIDS[$1]=$!
}

NODE_PORT=0
mount_backupfs() {
  local i
  rm -f "$WORK/node.port"
  setsid "$BACKUPFS" "$SRC" --listen "127.0.0.1:$NODE_PORT" --port-file "$WORK/node.port" \
    --host 127.0.0.1 --server-id "$SERVER_ID" --state-dir "$WORK/node-state" -f \
    >>"$LOGS/backupfs.log" 2>&1 &
  BACKUPFS_PID=$!
  for ((i = 0; i < 200; i++)); do
    is_mounted "$SRC" && break
    alive "$BACKUPFS_PID" || return 1
    sleep 0.05
  done
  is_mounted "$SRC" || return 1
  NODE_PORT=$(read_port "$WORK/node.port" 10) || return 1
}

# --- the workload ------------------------------------------------------------------------------
start_workload() {
  setsid "$PY" "$HERE/workload.py" run --dir "$SRC" --ctl "$CTL" --acked "$WORK/acked" \
    --seed "$SEED" --rate "$RATE" >"$WORK/workload.json" 2>>"$LOGS/workload.log" &
  WORKLOAD_PID=$!
}

pause_workload() {  # waits until the workload stands between two operations (bounded)
  local i
  touch "$CTL/pause"
  for ((i = 0; i < 1200; i++)); do
    [[ -e $CTL/paused ]] && return 0
    alive "$WORKLOAD_PID" || return 1
    sleep 0.05
  done
  return 1
}

resume_workload() {
  local i
  rm -f "$CTL/pause"
  for ((i = 0; i < 600; i++)); do
    [[ -e $CTL/paused ]] || return 0
    sleep 0.05
  done
  return 1
}

# --- the kills ---------------------------------------------------------------------------------
declare -A KILLED=([backupfs]=0 [backupd]=0 [r1]=0 [r2]=0)

restart_backupfs() {  # after its death: unmount the dead mount, mount again on the same port
  unmount_src || { fail "the dead mount of backupfs could not be unmounted"; return 1; }
  mount_backupfs || { fail "backupfs did not mount again (see $LOGS/backupfs.log)"; return 1; }
}

servings() { grep -c "worker [0-9]* serving" "$LOGS/backupfs.log" || true; }

kill_backupfs() {
  local kind=$((KILLED[backupfs] % 10)) before worker i
  if ((kind == 9)); then  # the keeper: the mount ends with it
    pause_workload || { fail "the workload did not pause within 60 s"; return 1; }
    kill9 "$BACKUPFS_PID" || { fail "backupfs survived kill -9"; return 1; }
    restart_backupfs || return 1
    resume_workload || { fail "the workload did not resume"; return 1; }
    return 0
  fi
  before=$(servings)
  if ((kind >= 7)); then
    kill -HUP "$BACKUPFS_PID"
  else
    worker=$(cat "/proc/$BACKUPFS_PID/task/$BACKUPFS_PID/children" 2>/dev/null | awk '{print $1}')
    [[ -n $worker ]] || { fail "the keeper has no worker to kill"; return 1; }
    kill -9 "$worker"
  fi
  for ((i = 0; i < 600; i++)); do
    (($(servings) > before)) && return 0
    alive "$BACKUPFS_PID" || break
    sleep 0.05
  done
  fail "no new backupfs worker serving within 30 s of $( ((kind >= 7)) && echo SIGHUP || echo kill -9)"
  return 1
}

kill_backupd() {
  kill9 "$BACKUPD_PID" || { fail "backupd survived kill -9"; return 1; }
  start_backupd || { fail "backupd did not start again (see $LOGS/backupd.log)"; return 1; }
}

kill_replicator() {  # index
  kill9 "${REPL_PIDS[$1]}" || { fail "r$(($1 + 1)) survived kill -9"; return 1; }
  start_replicator "$1"
}

# --- the cuts ----------------------------------------------------------------------------------
declare -A CUT=([node]=0 [r1]=0 [r2]=0 [missed]=0)

# Aborts one end of a link, drawn at random: the node's connection to backupd (backupd dials the
# node's port) or a replicator's (it dials backupd's). 0 if a connection was aborted, 1 if the
# link had none established (a cut right after another finds it reconnecting).
cut_link() {  # node|r1|r2
  local filter lport
  if [[ $1 == node ]]; then
    ((RANDOM % 2)) && filter="sport = :$NODE_PORT" || filter="dport = :$NODE_PORT"
  else
    lport=$(ss -tnpH state established "( dport = :$BACKUPD_PORT )" |
      awk -v p="pid=${REPL_PIDS[${1#r} - 1]}," 'index($0, p) { n = split($3, a, ":"); print a[n]; exit }')
    [[ -n $lport ]] || return 1
    ((RANDOM % 2)) && filter="sport = :$lport and dport = :$BACKUPD_PORT" ||
      filter="sport = :$BACKUPD_PORT and dport = :$lport"
  fi
  [[ -n $(ss -K -tnH state established "( $filter )" 2>/dev/null) ]]
}

# --- the full disks ---------------------------------------------------------------------------
declare -A FULL=([mirror]=0 [r1]=0 [r2]=0)

# Fills the disk of the mirror (backupd's state directory) or of a replicator's root to the
# last byte, waits 1-5 s while the workload goes on, and frees it.
fill_disk() {  # mirror|r1|r2
  local dir
  [[ $1 == mirror ]] && dir=$STATE || dir=$WORK/$1
  dd if=/dev/zero of="$dir/.filler" bs=1M status=none 2>/dev/null || true
  sleep "$(awk -v ms="$((1000 + RANDOM % 4001))" 'BEGIN { printf "%.3f", ms / 1000 }')"
  rm -f "$dir/.filler"
}

# Every daemon and the workload still alive? A daemon that died by itself is a failure; it is
# restarted so the run can go on and show what else happens.
check_alive() {
  local i st
  if [[ -n $WORKLOAD_PID ]] && ! alive "$WORKLOAD_PID"; then
    wait "$WORKLOAD_PID" 2>/dev/null && st=0 || st=$?
    fail "the workload exited (status $st; see $LOGS/workload.log)"
    return 1
  fi
  if ! alive "$BACKUPD_PID"; then
    wait "$BACKUPD_PID" 2>/dev/null && st=0 || st=$?
    fail "backupd died by itself (status $st)"
    start_backupd || return 1
  fi
  for i in 0 1; do
    if ! alive "${REPL_PIDS[i]}"; then
      wait "${REPL_PIDS[i]}" 2>/dev/null && st=0 || st=$?
      fail "r$((i + 1)) died by itself (status $st)"
      start_replicator "$i"
    fi
  done
  if ! alive "$BACKUPFS_PID"; then
    wait "$BACKUPFS_PID" 2>/dev/null && st=0 || st=$?
    fail "backupfs died by itself (status $st)"
    pause_workload || true
    restart_backupfs || return 1
    resume_workload || return 1
  fi
  return 0
}

# --- run ---------------------------------------------------------------------------------------
log "scratch $WORK; $KILLS kills, $CUTS cuts and $FULLS full disks at most, $MINUTES minutes at most, seed $SEED, gap $GAP s, workload $RATE ops/s"
RANDOM=$SEED
if ((FULLS > 0)); then
  for d in "$SRC:2g" "$STATE:256m" "$WORK/r1:256m" "$WORK/r2:256m"; do
    mount -t tmpfs -o "size=${d##*:},mode=0755" tmpfs "${d%:*}" || { log "cannot mount a tmpfs at ${d%:*}"; exit 2; }
    TMPFS+=("${d%:*}")
  done
fi
mount --bind "$SRC" "$BARE" && BOUND=1
mount --make-private "$BARE"  # so backupfs's mount over src never shows up here
start_backupd || { log "backupd did not start"; exit 2; }
for r in r1 r2; do
  bkptool -q replica add "$("$REPLICATOR" --root "$WORK/$r" --show-id)" --name "$r" \
    >>"$LOGS/bkptool.log" 2>&1 || { log "bkptool replica add failed"; exit 2; }
done
start_replicator 0
start_replicator 1
mount_backupfs || { log "backupfs did not mount"; exit 2; }
bkptool -q register 127.0.0.1 "$NODE_PORT" "$SRC" \
  --every 1h >>"$LOGS/bkptool.log" 2>&1 || { log "bkptool register failed"; exit 2; }
start_workload
for ((i = 0; i < 200; i++)); do
  VOLUME=$(ls -d "$STATE"/volumes/127.0.0.1/*/ 2>/dev/null | head -1) && [[ -n $VOLUME ]] && break
  sleep 0.05
done
[[ -n $VOLUME ]] || { log "backupd made no volume directory"; exit 2; }
MIRROR=${VOLUME}mirror
ESCAPED=$(basename "$VOLUME")  # the volume's escaped path, the same on the replicas
R1=$WORK/r1/127.0.0.1/$ESCAPED
R2=$WORK/r2/127.0.0.1/$ESCAPED

killed() { echo "backupfs ${KILLED[backupfs]}, backupd ${KILLED[backupd]}, r1 ${KILLED[r1]}, r2 ${KILLED[r2]}"; }
cut() { echo "node ${CUT[node]}, r1 ${CUT[r1]}, r2 ${CUT[r2]}, missed ${CUT[missed]}"; }
full() { echo "mirror ${FULL[mirror]}, r1 ${FULL[r1]}, r2 ${FULL[r2]}"; }
deadline=$(($(date +%s) + MINUTES * 60))
done_kills=0 done_cuts=0 done_fulls=0
while ((done_kills < KILLS || done_cuts < CUTS || done_fulls < FULLS)) &&
  (($(date +%s) < deadline)) && ((${#FAILURES[@]} == 0)); do
  gap=$((GAP_MIN * 1000 + RANDOM % ((GAP_MAX - GAP_MIN) * 1000 + 1)))
  sleep "$(awk -v ms="$gap" 'BEGIN { printf "%.3f", ms / 1000 }')"
  check_alive || break
  draw=$((RANDOM % (KILLS - done_kills + CUTS - done_cuts + FULLS - done_fulls)))
  if ((draw < FULLS - done_fulls)); then
    case $((RANDOM % 3)) in
      0) disk=mirror ;;
      *) disk=r$((RANDOM % 2 + 1)) ;;
    esac
    fill_disk "$disk"
    FULL[$disk]=$((FULL[$disk] + 1))
    done_fulls=$((done_fulls + 1))
    printf '%s full %d %s\n' "$(date +%T.%N)" "$done_fulls" "$disk" >>"$WORK/kills.log"
    ((done_fulls % 10 == 0)) && log "$done_fulls full disks ($(full))"
    continue
  fi
  if ((draw < FULLS - done_fulls + CUTS - done_cuts)); then
    case $((RANDOM % 3)) in
      0) link=node ;;
      *) link=r$((RANDOM % 2 + 1)) ;;
    esac
    if cut_link "$link"; then CUT[$link]=$((CUT[$link] + 1)); else CUT[missed]=$((CUT[missed] + 1)); fi
    done_cuts=$((done_cuts + 1))
    printf '%s cut %d %s\n' "$(date +%T.%N)" "$done_cuts" "$link" >>"$WORK/kills.log"
    ((done_cuts % 10 == 0)) && log "$done_cuts cuts ($(cut))"
    continue
  fi
  case $((RANDOM % 3)) in
    0) victim=backupfs; kill_backupfs || break ;;
    1) victim=backupd; kill_backupd || break ;;
    2) i=$((RANDOM % 2)); victim=r$((i + 1)); kill_replicator "$i" || break ;;
  esac
  KILLED[$victim]=$((KILLED[$victim] + 1))
  done_kills=$((done_kills + 1))
  printf '%s kill %d %s\n' "$(date +%T.%N)" "$done_kills" "$victim" >>"$WORK/kills.log"
  ((done_kills % 10 == 0)) && log "$done_kills kills ($(killed))"
done
kill_minutes=$(awk -v s="$(elapsed)" 'BEGIN { printf "%.1f", s / 60 }')
log "faults done in $kill_minutes min: $done_kills of $KILLS kills ($(killed)), $done_cuts of $CUTS cuts ($(cut)), $done_fulls of $FULLS full disks ($(full))"
check_alive || true

# The workload stops; its summary says whether any operation failed.
touch "$CTL/stop"
rm -f "$CTL/pause"
wait_gone "$WORKLOAD_PID" 60 || { fail "the workload did not stop within 60 s"; kill9 "$WORKLOAD_PID" || true; }
wait "$WORKLOAD_PID" 2>/dev/null && wl=0 || wl=$?
WORKLOAD_PID=
log "workload: $(cat "$WORK/workload.json" 2>/dev/null || echo '(no summary)')"
((wl == 0)) || fail "the workload reported failed operations (status $wl; see $LOGS/workload.log)"

# Convergence: bkp_treecmp until equal, bounded.
t0=$(date +%s)
converged=0
while (($(date +%s) - t0 < CONVERGE_TIMEOUT)); do
  check_alive || true
  if out=$(timeout 600 "$TREECMP" "${CMP_OPTS[@]}" "$BARE" "$MIRROR" "$R1" "$R2" 2>&1); then
    converged=1
    break
  fi
  sleep 2
done
if ((converged)); then
  log "converged: source, mirror and both replicas equal${CMP_OPTS:+ (holes not compared)} after $(($(date +%s) - t0)) s"
else
  fail "not converged within $CONVERGE_TIMEOUT s: $out"
  for copy in "$MIRROR" "$R1" "$R2"; do  # what differs, for the report
    log "names and content: $("$PY" "$HERE/workload.py" names "$BARE" "$copy" 2>&1 || true)"
    log "bkp_treecmp --no-holes: $(timeout 600 "$TREECMP" --no-holes "$BARE" "$copy" 2>&1 && echo equal || true)"
  done
fi

# Every fsync-acknowledged append, in all four trees.
if out=$("$PY" "$HERE/workload.py" check --acked "$WORK/acked" "$BARE" "$MIRROR" "$R1" "$R2" 2>&1); then
  log "appends: $out"
else
  fail "acknowledged appends missing: $out"
fi
grep -c . "$WORK/acked" >/dev/null 2>&1 || fail "the workload acknowledged no append at all"

n=$(cat "$LOGS/r1.log" "$LOGS/r2.log" | grep -c 'sync-end without sync-begin' || true)
((n == 0)) || log "replicators logged 'apply sync-end without sync-begin: nothing pruned' $n time(s): a node reconcile's sync-end reached a replica whose stream was rebuilt mid-way (entries it should prune stay)"
errors=$(cat "$LOGS/backupd.log" "$LOGS/backupfs.log" "$LOGS/r1.log" "$LOGS/r2.log" | grep -ci 'error' || true)
log "log lines mentioning 'error': $errors (expected: refused connections while a peer was down)"
if ((${#FAILURES[@]})); then
  log "FAILED: ${#FAILURES[@]} failure(s):"
  for f in "${FAILURES[@]}"; do log "  - $f"; done
  log "logs kept in $LOGS"
  exit 1
fi
log "PASSED: $done_kills kills ($(killed)), $done_cuts cuts ($(cut)) and $done_fulls full disks ($(full)) in $kill_minutes min, then converged"
