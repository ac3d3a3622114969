# Shared bash helpers for the benchmark scripts: logging, recording results, and owning the
# processes and mounts the benchmark creates.
#
# Why one place: every section starts daemons and FUSE mounts, and the one promise the benchmark
# makes is to leave none behind, whatever happens (error, Ctrl-C, a daemon dying). So every
# process and mount is registered here when it is made, and cleanup_all (run.sh's EXIT trap)
# unmounts each mount and stops each PID we started, by PID, in the right order: unmount first
# (backupfs ships what is left and exits), then the daemons.
#
# Results: record KEY VALUE appends one JSON line {"key","round","value"} to $RAW; report.py
# turns those lines into the table. record_skip KEY REASON marks a measurement skipped (the
# reason is what its row shows).
#
# Sourced by run.sh; expects BENCH (bench/ dir), WORK (scratch dir), RAW (results lines) and
# ROUND (current round number) to be set by the caller.

BENCH_PIDS=()    # daemons we started, stopped in reverse order
BENCH_MOUNTS=()  # FUSE mountpoints we made ("dir pid" pairs)
BENCH_BINDS=()   # bind and tmpfs mounts we made

# Each line carries the 1-minute load average: on a shared 2-core machine it says how much a
# figure can be trusted.
log() { printf '[bench %s load %s] %s\n' "$(date +%H:%M:%S)" "$(cut -d' ' -f1 /proc/loadavg)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Debian's python3 first: a pyenv shim on PATH can cost most of a second per call. tools.py
# needs only the standard library, so -S skips site-packages and their .pth hooks as well.
PY=$(command -v /usr/bin/python3 || command -v python3)
tools() { "$PY" -S "$BENCH/tools.py" "$@"; }

# json_get JSON KEY -> a number out of the flat JSON tools.py prints ("null" if it is null).
# A dotted KEY (arrived.replica) matches its last part; tools.py keeps key names unique.
json_get() {
  local re="\"${2##*.}\": ?(null|-?[0-9][0-9.eE+-]*)"
  [[ $1 =~ $re ]] || die "no '$2' in: $1"
  echo "${BASH_REMATCH[1]}"
}

json_str() {  # text -> a JSON string literal
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "${s//$'\n'/ }"
}

# calc EXPR -> floating point result (awk), e.g. calc "$a - $b"
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }

record() {  # key value
  printf '{"key": "%s", "round": %d, "value": %s}\n' "$1" "${ROUND:-0}" "$2" >>"$RAW"
}
record_skip() {  # key reason
  printf '{"key": "%s", "round": %d, "skipped": %s}\n' "$1" "${ROUND:-0}" "$(json_str "$2")" >>"$RAW"
}

have() { command -v "$1" >/dev/null 2>&1; }

# Cold-cache measurements start here. --smoke skips it: its numbers mean nothing anyway, and a
# global sync + cache drop would stall whatever else the test suite runs beside it.
drop_caches() {
  ((SMOKE)) && return 0
  sync
  echo 3 >/proc/sys/vm/drop_caches
}

now() { echo "$EPOCHREALTIME"; }

# --- processes ---------------------------------------------------------------------------------

# start_daemon NAME CMD... : runs CMD in its own session (so Ctrl-C reaches only us and we stop
# it in order), output to $WORK/logs/NAME.log; sets DAEMON_PID.
start_daemon() {
  local name=$1
  shift
  mkdir -p "$WORK/logs"
  setsid "$@" >>"$WORK/logs/$name.log" 2>&1 &
  DAEMON_PID=$!
  BENCH_PIDS+=("$DAEMON_PID")
}

alive() { kill -0 "$1" 2>/dev/null; }

wait_gone() {  # pid seconds
  local i
  for ((i = 0; i < $2 * 20; i++)); do
    alive "$1" || return 0
    sleep 0.05
  done
  return 1
}

forget_pid() {
  local p keep=()
  for p in "${BENCH_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  BENCH_PIDS=("${keep[@]}")
}

stop_pid() {  # pid: SIGTERM, then SIGKILL after 15 s
  local pid=$1
  if alive "$pid"; then
    kill "$pid" 2>/dev/null || true
    wait_gone "$pid" 15 || kill -9 "$pid" 2>/dev/null || true
    wait_gone "$pid" 5 || true
  fi
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

# kill9_pid PID: SIGKILL, then reaps it (bash's "Killed" notice silenced); 1 if it survives 10 s.
kill9_pid() {
  { kill -9 "$1"; wait_gone "$1" 10 && wait "$1"; } 2>/dev/null
  ! alive "$1"
}

# proc_tree PID...: sets PROC_TREE to the PIDs and all their live descendants. A daemon's figures
# are its whole process tree's: `backupfs DIR` is a keeper (fs/keeper.h) that only holds the mount
# while a worker child serves it, so the keeper's own counters stay near zero. Reads
# /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN); a process that exits meanwhile drops out.
proc_tree() {
  local i t
  local -a kids
  PROC_TREE=("$@")
  for ((i = 0; i < ${#PROC_TREE[@]}; i++)); do
    for t in /proc/"${PROC_TREE[i]}"/task/*/children; do
      kids=()
      read -ra kids 2>/dev/null <"$t" || true  # one line, no newline at its end
      PROC_TREE+=("${kids[@]}")
    done
  done
}

# proc_sum FILE FIELD PID...: FIELD of /proc/P/FILE (a file of "Field: N" lines: status, io)
# summed over the processes' trees. For io the kernel has already added a reaped child's counters
# to its parent's. Summed peaks (status VmHWM) bound the tree's peak from above; the keeper's
# part is a few MiB, mostly shared library pages that its worker maps too.
proc_sum() {
  local file=$1 k=$2 pid n=0 v
  shift 2
  proc_tree "$@"
  for pid in "${PROC_TREE[@]}"; do
    v=$(awk -v k="$k:" '$1 == k { print $2 }' "/proc/$pid/$file" 2>/dev/null) || true
    n=$((n + ${v:-0}))
  done
  echo "$n"
}
hwm_kib() { proc_sum status VmHWM "$1"; }
io_of() { proc_sum io "$2" "$1"; }  # PID FIELD: one counter of /proc/PID/io (rchar, read_bytes, ...)

# cpu_s PID...: CPU seconds (utime+stime, all threads) of the processes' trees, plus what their
# reaped children used (cutime+cstime): a keeper's worker that exited still counts.
CLK_TCK=$(getconf CLK_TCK)
cpu_s() {
  local pid line ticks=0
  local -a f
  proc_tree "$@"
  for pid in "${PROC_TREE[@]}"; do
    read -r line 2>/dev/null <"/proc/$pid/stat" || continue
    read -ra f <<<"${line##*) }"
    ticks=$((ticks + f[11] + f[12] + f[13] + f[14]))
  done
  calc "$ticks / $CLK_TCK"
}

# Peak RSS of a daemon, recorded as rss.<proc>.<context> (MiB), just before it is stopped.
record_hwm() {  # proc context pid
  local kib
  kib=$(hwm_kib "$3")
  [[ -n $kib && $kib != 0 ]] && record "rss.$1.$2" "$(calc "$kib / 1024")"
  return 0
}

# --- mounts ------------------------------------------------------------------------------------

is_mounted() { awk -v d="$1" '$5 == d { found = 1 } END { exit !found }' /proc/self/mountinfo; }

wait_mounted() {  # dir pid
  local i
  for ((i = 0; i < 200; i++)); do
    is_mounted "$1" && return 0
    alive "$2" || return 1
    sleep 0.05
  done
  return 1
}

# start_fuse NAME MOUNTPOINT CMD... : starts a FUSE daemon (in the foreground mode of CMD) and
# waits for its mount; sets DAEMON_PID.
start_fuse() {
  local name=$1 dir=$2
  shift 2
  start_daemon "$name" "$@"
  BENCH_MOUNTS+=("$dir $DAEMON_PID")
  wait_mounted "$dir" "$DAEMON_PID" || die "$name did not mount $dir (see $WORK/logs/$name.log)"
}

# unmount_fuse MOUNTPOINT: fusermount3 -u (retrying while busy), then waits for its daemon to exit
# (backupfs first ships what is left, up to 10 s).
unmount_fuse() {
  local dir=$1 entry pid="" keep=() i
  for entry in "${BENCH_MOUNTS[@]}"; do
    if [[ ${entry% *} == "$dir" ]]; then pid=${entry##* }; else keep+=("$entry"); fi
  done
  BENCH_MOUNTS=("${keep[@]}")
  for ((i = 0; i < 20; i++)); do
    is_mounted "$dir" || break
    fusermount3 -u "$dir" 2>/dev/null && break
    sleep 0.5
  done
  is_mounted "$dir" && fusermount3 -u -z "$dir" 2>/dev/null
  if [[ -n $pid ]]; then
    wait_gone "$pid" 20 || kill "$pid" 2>/dev/null || true
    stop_pid "$pid"
  fi
}

bind_mount() {  # src dst: a view of src's real files that stays visible under a FUSE mount
  mkdir -p "$2"
  mount --bind "$1" "$2"
  BENCH_BINDS+=("$2")
}

unbind() {
  local keep=() d
  umount "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || true
  for d in "${BENCH_BINDS[@]}"; do [[ $d == "$1" ]] || keep+=("$d"); done
  BENCH_BINDS=("${keep[@]}")
}

# tmpfs_mount DIR MIB: a tmpfs of at most MIB MiB at DIR (diagnostic rows: backupd's state and
# the replicas in RAM, so the second on-disk copy of every byte is out of the comparison).
# Returns 1 (and mounts nothing) when MemAvailable cannot hold it plus 2 GiB to spare; the caller
# then records a skipped row. Unmounted with unbind (or by cleanup_all).
tmpfs_mount() {
  local avail
  avail=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
  ((avail >= $2 + 2048)) || return 1
  mkdir -p "$1"
  mount -t tmpfs -o "size=${2}m,mode=0755" bench-tmpfs "$1" || return 1
  BENCH_BINDS+=("$1")
}

# --- FUSE requests, counted by the kernel --------------------------------------------------------
#
# The fuse:fuse_request_send tracepoint fires once for every request the kernel queues for a FUSE
# daemon, with its opcode. We count in a tracing instance of our own (instances/bkp-bench-PID:
# its own ring buffer and event switches, so another user of the global trace is neither
# disturbed nor counted) with a filter on one connection (the mount's device number), so another
# FUSE mount on the machine (a test run, a fault run) does not leak into the count either. This
# kernel has no hist triggers, so the events go through the ring buffer and are counted from its
# text; the buffer is sized by the caller, and a count that lost events is refused, never
# reported short.
#
#   fuse_trace_open KIB || record_skip ... "$FUSE_TRACE_SKIP"   once (KIB: buffer per CPU)
#   fuse_trace_start MOUNTPOINT; <the workload>; fuse_trace_stop
#   fuse_trace_counts   -> "FUSE_OPCODE COUNT" lines, most frequent first
#   fuse_trace_close    (cleanup_all calls it too)

FUSE_TRACE=       # the instance directory while open
FUSE_TRACE_MNT=   # a tracefs we mounted ourselves, if the system had none
FUSE_TRACE_SKIP=  # why tracing is not available

fuse_trace_open() {  # KIB
  local root=/sys/kernel/tracing
  FUSE_TRACE_SKIP=
  if [[ ! -e $root/trace ]]; then
    FUSE_TRACE_MNT=$WORK/tracefs
    mkdir -p "$FUSE_TRACE_MNT"
    if ! mount -t tracefs nodev "$FUSE_TRACE_MNT" 2>/dev/null; then
      FUSE_TRACE_MNT=
      FUSE_TRACE_SKIP="tracefs is not mounted and cannot be mounted"
      return 1
    fi
    root=$FUSE_TRACE_MNT
  fi
  if [[ ! -d $root/events/fuse/fuse_request_send ]]; then
    FUSE_TRACE_SKIP="no fuse:fuse_request_send tracepoint in this kernel"
  elif ! mkdir "$root/instances/bkp-bench-$$" 2>/dev/null; then
    FUSE_TRACE_SKIP="cannot create a tracing instance under $root/instances"
  else
    FUSE_TRACE=$root/instances/bkp-bench-$$
    echo "$1" >"$FUSE_TRACE/buffer_size_kb" ||
      FUSE_TRACE_SKIP="cannot size the trace buffer to $1 KiB per CPU"
  fi
  [[ -z $FUSE_TRACE_SKIP ]] && return 0
  fuse_trace_close
  return 1
}

# fuse_trace_start MOUNTPOINT: counts that mount's requests from now on (an empty buffer). The
# tracepoint's connection is the kernel's dev_t of the mount (major << 20 | minor); stat's st_dev
# is the userspace encoding, decoded here.
fuse_trace_start() {
  local dev major minor ev=$FUSE_TRACE/events/fuse/fuse_request_send
  dev=$(stat -c %d "$1")
  major=$(((dev >> 8) & 0xfff | (dev >> 32) & ~0xfff))
  minor=$((dev & 0xff | (dev >> 12) & ~0xff))
  echo 0 >"$FUSE_TRACE/tracing_on"
  echo "connection == $((major << 20 | minor))" >"$ev/filter"
  : >"$FUSE_TRACE/trace"
  echo 1 >"$ev/enable"
  echo 1 >"$FUSE_TRACE/tracing_on"
}

fuse_trace_stop() {
  echo 0 >"$FUSE_TRACE/tracing_on"
  echo 0 >"$FUSE_TRACE/events/fuse/fuse_request_send/enable"
}

# fuse_trace_counts: the requests since fuse_trace_start by opcode, "FUSE_LOOKUP 3071" lines, most
# frequent first. Returns 1 with FUSE_TRACE_SKIP set if the buffer lost events.
fuse_trace_counts() {
  local re='entries-in-buffer/entries-written: ([0-9]+)/([0-9]+)'
  [[ $(grep -m1 -o 'entries-in-buffer/entries-written: [0-9]*/[0-9]*' "$FUSE_TRACE/trace") =~ $re ]] ||
    { FUSE_TRACE_SKIP="no entry count in the trace header"; return 1; }
  if ((BASH_REMATCH[1] != BASH_REMATCH[2])); then
    FUSE_TRACE_SKIP="the trace buffer lost events (${BASH_REMATCH[1]} of ${BASH_REMATCH[2]} kept)"
    return 1
  fi
  grep -o '(FUSE_[A-Z0-9_]*)' "$FUSE_TRACE/trace" | tr -d '()' | sort | uniq -c | sort -rn |
    awk '{ print $2, $1 }'
}

fuse_trace_close() {
  if [[ -n $FUSE_TRACE ]]; then
    echo 0 >"$FUSE_TRACE/events/fuse/fuse_request_send/enable" 2>/dev/null || true
    rmdir "$FUSE_TRACE" 2>/dev/null || log "warning: could not remove the tracing instance $FUSE_TRACE"
    FUSE_TRACE=
  fi
  if [[ -n $FUSE_TRACE_MNT ]]; then
    umount "$FUSE_TRACE_MNT" 2>/dev/null || umount -l "$FUSE_TRACE_MNT" 2>/dev/null || true
    FUSE_TRACE_MNT=
  fi
  return 0
}

cleanup_all() {
  local entry i
  for ((i = ${#BENCH_MOUNTS[@]} - 1; i >= 0; i--)); do
    entry=${BENCH_MOUNTS[i]}
    log "cleanup: unmounting ${entry% *}"
    unmount_fuse "${entry% *}"
  done
  for ((i = ${#BENCH_BINDS[@]} - 1; i >= 0; i--)); do unbind "${BENCH_BINDS[i]}"; done
  for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${BENCH_PIDS[i]}"; done
  fuse_trace_close
}

# --- backupd / replicator ----------------------------------------------------------------------

# start_backupd STATE_DIR [PORT]: sets BACKUPD_PID and BACKUPD_PORT. PORT (default 0: any) lets a
# restarted backupd come back where its replicators and bkptool look for it. BACKUPD_CONFIG, if
# set, is passed as --config. It logs warnings
# only, unless the caller sets BACKUPD_QUIET= (the restart section reads its info lines).
#
# Every link runs TLS with identities, as in production, unless BENCH_TLS=0 (every daemon then
# gets --no-tls: the TLS-off half of the TLS cost rows). backupd's identity is SERVER_ID; bkptool
# reaches backupd over its local control socket, STATE_DIR/control.sock.
tls_flags() { [[ ${BENCH_TLS:-1} == 0 ]] && printf '%s\n' --no-tls; }
start_backupd() {
  local state=$1 port=${2:-0} i
  mkdir -p "$state"
  rm -f "$state.port"
  BACKUPD_STATE=$state
  SERVER_ID=$("$BACKUPD" --state-dir "$state" --show-id) || die "backupd --show-id failed"
  # shellcheck disable=SC2086,SC2046  # an empty BACKUPD_QUIET is no argument
  start_daemon backupd "$BACKUPD" --state-dir "$state" --listen "127.0.0.1:$port" \
    --port-file "$state.port" --control-socket "$state/control.sock" $(tls_flags) \
    ${BACKUPD_QUIET--q} ${BACKUPD_CONFIG:+--config "$BACKUPD_CONFIG"}
  BACKUPD_PID=$DAEMON_PID
  for ((i = 0; i < 200; i++)); do
    [[ -s $state.port ]] && break
    alive "$BACKUPD_PID" || die "backupd exited (see $WORK/logs/backupd.log)"
    sleep 0.05
  done
  BACKUPD_PORT=$(tr -dc 0-9 <"$state.port")
  [[ -n $BACKUPD_PORT ]] || die "backupd wrote no port"
}

start_replicator() {  # name root [flags...]: authorises it on backupd (again is fine), sets DAEMON_PID
  local id
  mkdir -p "$2"
  id=$("$REPLICATOR" --root "$2" --show-id) || die "replicator --show-id failed"
  bkptool -q replica add "$id" --name "$1" >>"$WORK/logs/bkptool.log" 2>&1 ||
    [[ $? == 5 ]] || die "bkptool replica add failed (see $WORK/logs/bkptool.log)"
  # shellcheck disable=SC2046
  start_daemon "replicator-$1" "$REPLICATOR" --server "127.0.0.1:$BACKUPD_PORT" \
    --server-id "$SERVER_ID" --root "$2" --name "$1" $(tls_flags) -q "${@:3}"
}

# Since registration (issue 3) backupfs listens and backupd attaches when `bkptool register`
# tells it to. The volume is named by backupfs --host, in backupd's and the replicas' layouts:
# VOL_HOST, which is also the address it is registered at.
VOL_HOST=127.0.0.1
bkptool() { "$BKPTOOL" --server "$BACKUPD_STATE/control.sock" "$@"; }
# The flags every backupfs of ours gets: backupd's identity and where its own lives.
node_flags() {
  printf '%s\n' --server-id "$SERVER_ID" --state-dir "$WORK/node-state"
  tls_flags
}
# replica_tree ROOT DIR: where a replicator with --root ROOT keeps the volume DIR
# (ROOT/<host>/<escaped path>, common/path.h escape_path: systemd's escaping of a path).
replica_tree() {
  printf '%s/%s/%s' "$1" "$VOL_HOST" "$(python3 -c '
import sys
p = sys.argv[1].lstrip("/")
print("".join("-" if c == "/" else c if c.isascii() and (c.isalnum() or c == "_" or (c == "." and i > 0))
              else "".join("\\x%02x" % b for b in c.encode()) for i, c in enumerate(p)), end="")
' "$2")"
}

# mount_backupfs DIR [EVERY]: backupfs over DIR, registered with our backupd (which then attaches
# and takes the baseline); EVERY is the snapshot period (default 1d: no snapshot during a
# measurement). Sets BACKUPFS_PID and NODE_PORT. Like backupd it logs warnings only, unless
# BACKUPFS_QUIET= is set.
mount_backupfs() {
  local dir=$1 every=${2:-1d} port_file=$WORK/backupfs.port i node_port=
  rm -f "$port_file"
  # shellcheck disable=SC2086,SC2046  # an empty BACKUPFS_QUIET is no argument
  start_fuse backupfs "$dir" "$BACKUPFS" "$dir" --listen 127.0.0.1:0 --port-file "$port_file" \
    --host "$VOL_HOST" $(node_flags) -f ${BACKUPFS_QUIET--q}
  BACKUPFS_PID=$DAEMON_PID
  for ((i = 0; i < 200; i++)); do
    [[ -s $port_file ]] && node_port=$(tr -dc 0-9 <"$port_file") && [[ -n $node_port ]] && break
    sleep 0.05
  done
  [[ -n $node_port ]] || die "backupfs wrote no port file (see $WORK/logs/backupfs.log)"
  NODE_PORT=$node_port
  bkptool -q register "$VOL_HOST" "$node_port" "$dir" --every "$every" \
    >>"$WORK/logs/bkptool.log" 2>&1 || die "bkptool register failed (see $WORK/logs/bkptool.log)"
}

# mount_backupfs_detached DIR: backupfs over DIR that no backupd attaches to (recording only,
# never shipping): tells capture cost from shipping cost. Sets BACKUPFS_PID.
mount_backupfs_detached() {
  start_fuse backupfs "$1" "$BACKUPFS" "$1" --listen 127.0.0.1:0 --host "$VOL_HOST" --no-tls \
    --state-dir "$WORK/node-state" -f -q
  BACKUPFS_PID=$DAEMON_PID
}

# unmount_backupfs DIR: unmounts (backupfs ships what is left first), then unregisters the
# volume so the same directory can be registered again with a new port.
unmount_backupfs() {
  unmount_fuse "$1"
  bkptool -q unregister "$VOL_HOST" "$1" >>"$WORK/logs/bkptool.log" 2>&1 ||
    log "warning: bkptool unregister $1 failed"
}

volume_dir() {  # state_dir -> the volume directory (each backupd of ours holds one volume)
  local d
  for d in "$1"/volumes/*/*/; do [[ -d $d ]] && { echo "${d%/}"; return 0; }; done
  return 1
}

wait_volume() {  # state_dir: waits until backupd made the volume directory; sets VOLUME_DIR
  local i
  for ((i = 0; i < 400; i++)); do
    VOLUME_DIR=$(volume_dir "$1") && return 0
    sleep 0.05
  done
  die "backupd made no volume under $1 (see $WORK/logs)"
}

# free_space DIR: DIR's gigabytes go at once, its inodes only when the run ends. An ext4 without
# a journal (this machine's root filesystem) does not reuse an inode freed in the last 60 s (360 s
# while its inode table block is dirty): every create scans past such inodes, one buffer-cache
# lookup each, so after a deletion of 20k files the next 20k creates cost seconds of CPU (perf
# during an untar that followed one: a third of backupd's CPU in recently_deleted). A run that
# deleted its predecessor's trees was measured against that scan, and the more copies it made
# (backupfs's mirror, each replica) the more it paid. So DIR moves into $WORK/trash, only its
# files of 1 MiB and more (few inodes, most of the bytes) are deleted now, and the run's final
# cleanup deletes the rest. A DIR on another filesystem (a tmpfs) is deleted at once. Smoke runs
# leave their few megabytes to the final cleanup.
free_space() {
  ((SMOKE)) && return 0
  [[ -e $1 ]] || return 0
  mkdir -p "$WORK/trash"
  if [[ $(stat -c %d "$1") != "$(stat -c %d "$WORK/trash")" ]]; then
    rm -rf "$1"
    return 0
  fi
  local t
  t=$(mktemp -d "$WORK/trash/XXXXXX")
  mv "$1" "$t/"
  find "$t" -xdev -type f -size +1M -delete
}
