# Section 1: what does the application pay for running on backupfs?
#
# The same workloads run on directories of the same ext4 filesystem:
#   native     the directory itself
#   pll        libfuse's passthrough_ll example mounted over a directory: the cost of plain FUSE
#   pll-xattr  the same with -o xattr: plain FUSE serving xattrs, as backupfs does (the kernel
#              then asks GETXATTR security.capability before writes): the fair baseline
#   backupfs   backupfs mounted over a directory, recording and shipping to a local backupd
# so backupfs/pll and backupfs/pll-xattr isolate what backupfs adds beyond FUSE itself, and
# backupfs/native is what a user sees. Every round runs them all back to back; ratios are taken
# within a round.
#
# Two diagnostic configurations follow (on by default, off with --no-diagnostics; the table shows
# them apart from the headline figures). They explain a missed target, they do not replace it:
#   backupfs-tmpfs     backupfs shipping to a second backupd whose state directory (the mirror)
#                      is on a tmpfs: the same software path, minus the second on-disk copy of
#                      every byte that shares the disk's bandwidth with the application's own
#   backupfs-detached  backupfs with no backupd attached (recording, never shipping): the cost
#                      of capture alone
#
# Workloads (each timed from outside, wall clock, rate = amount / time):
#   seqwrite    fio, 1 MiB sequential writes of FIO_MIB, fsync at the end
#   seqread     fio, 1 MiB sequential reads of that file after dropping the page cache
#   randwrite   fio, 4 KiB random writes (RAND_MIB of them) into that file, fsync at the end
#   fsyncwrite  fio, FSYNC_WRITES 4 KiB random writes into that file, each followed by fsync
#               (a database-like writer: every write is a round trip to the disk)
#   untar       tar -xf of a deterministic ~15k-entry source tree; for the FUSE configurations
#               the kernel's fuse_request_send events on that mount are counted meanwhile
#               (lib.sh fuse_trace_*): fs.untar_requests.CFG = requests per entry, and per opcode
#   walk_cold   find -printf of every entry's size/mode/mtime (stats all) after dropping caches
#   walk_warm   the same again right away
# Daemon CPU (utime+stime from /proc/PID/stat, of the daemon's process tree: backupfs's keeper
# and its worker) is taken from the start of a workload until the daemons are idle again, so for
# backupfs it includes shipping the change to backupd; backupd's CPU is reported separately.
# "lag" is how long backupfs kept shipping after the workload ended.
#
# Nothing is deleted during a round. Each round works in a directory of its own (every
# configuration's tree, and backupd's state with the mirror, since each round starts a fresh
# backupd), given to free_space at the end of the round (lib.sh: its large files go, its inodes
# stay until the run ends), followed by `sync`. Why: on this ext4 without a journal, the creates
# that follow a large deletion scan past every inode freed in the last minute (lib.sh,
# free_space), so a configuration whose untar ran after another's teardown, or after the previous
# round's deletion, paid for it, backupfs twice (source and mirror). Now every configuration
# untars into a filesystem that freed no inode since the run began.

FS_WORKLOADS=(seqwrite seqread randwrite fsyncwrite untar walk_cold walk_warm)
FS_CONFIG_RE='^(native|pll|pll-xattr|backupfs|backupfs-tmpfs|backupfs-detached)$'

fs_overhead_section() {
  local root=$WORK/fs cfg
  mkdir -p "$root"
  TARBALL=$root/src.tar
  log "fs: generating a $TAR_ENTRIES-entry tarball"
  tools gen-tarball "$TARBALL" --entries "$TAR_ENTRIES" >/dev/null
  IFS=, read -ra FS_CONFIGS <<<"$FS_CONFIG_LIST"
  FS_TMPFS_SKIP=
  for cfg in "${FS_CONFIGS[@]}"; do
    [[ $cfg =~ $FS_CONFIG_RE ]] ||
      die "unknown --fs-configs entry '$cfg' (native, pll, pll-xattr, backupfs, backupfs-tmpfs, backupfs-detached)"
    if [[ $cfg == backupfs-tmpfs ]] && ! tmpfs_mount "$root/tmpfs" "$TMPFS_FS_MIB"; then
      FS_TMPFS_SKIP="skipped: no room for a ${TMPFS_FS_MIB} MiB tmpfs (MemAvailable)"
    fi
  done
  # Room for ~50 requests per entry on one CPU (about 13 are expected), 48 bytes each.
  fuse_trace_open $((TAR_ENTRIES * 2 > 2048 ? TAR_ENTRIES * 2 : 2048)) ||
    log "fs: not counting FUSE requests: $FUSE_TRACE_SKIP"

  for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    fs_round_start
    for cfg in "${FS_CONFIGS[@]}"; do
      if [[ $cfg == pll* && -n $PLL_SKIP ]]; then
        fs_skip_all "$cfg" "skipped: $PLL_SKIP"
        continue
      fi
      if [[ $cfg == backupfs-tmpfs && -n $FS_TMPFS_SKIP ]]; then
        fs_skip_all backupfs-tmpfs "$FS_TMPFS_SKIP"
        continue
      fi
      log "fs: round $ROUND, $cfg"
      fs_setup "$cfg"
      fs_run_workloads "$cfg"
      fs_teardown "$cfg"
      record "fs.load.$cfg" "$(cut -d' ' -f1 /proc/loadavg)"
    done
    fs_round_end
  done
  ROUND=0
  fuse_trace_close
  [[ -z $FS_TMPFS_SKIP ]] && is_mounted "$root/tmpfs" && unbind "$root/tmpfs"
  free_space "$root"
}

# Each round gets fresh backupds (one per state location in use) and a directory of its own,
# FS_ROUND_DIR, under which every configuration of the round keeps what it wrote.
fs_round_start() {
  FS_ROUND_DIR=$WORK/fs/round-$ROUND
  mkdir -p "$FS_ROUND_DIR"
  FS_DISK_BACKUPD_PID='' FS_TMPFS_BACKUPD_PID=''
  if [[ ,$FS_CONFIG_LIST, == *,backupfs,* ]]; then
    start_backupd "$FS_ROUND_DIR/state"
    FS_DISK_BACKUPD_PID=$BACKUPD_PID FS_DISK_BACKUPD_PORT=$BACKUPD_PORT
    FS_DISK_SERVER_ID=$SERVER_ID FS_DISK_BACKUPD_STATE=$BACKUPD_STATE
  fi
  if [[ ,$FS_CONFIG_LIST, == *,backupfs-tmpfs,* && -z $FS_TMPFS_SKIP ]]; then
    start_backupd "$WORK/fs/tmpfs/round-$ROUND/state"
    FS_TMPFS_BACKUPD_PID=$BACKUPD_PID FS_TMPFS_BACKUPD_PORT=$BACKUPD_PORT
    FS_TMPFS_SERVER_ID=$SERVER_ID FS_TMPFS_BACKUPD_STATE=$BACKUPD_STATE
  fi
}

# Stops the round's backupds and frees what the round wrote, then syncs: the next round starts
# with no deletion pending and no inode freed (see the top).
fs_round_end() {
  if [[ -n $FS_DISK_BACKUPD_PID ]]; then
    record_hwm backupd fs "$FS_DISK_BACKUPD_PID"
    stop_pid "$FS_DISK_BACKUPD_PID"
  fi
  [[ -n $FS_TMPFS_BACKUPD_PID ]] && stop_pid "$FS_TMPFS_BACKUPD_PID"
  rm -rf "$WORK/fs/tmpfs/round-$ROUND"
  ((SMOKE)) && return 0  # one round; its few megabytes go with the scratch directory
  log "fs: round $ROUND done, freeing what it wrote"
  free_space "$FS_ROUND_DIR"
  sync
}

fs_skip_all() {  # cfg reason
  local w
  for w in "${FS_WORKLOADS[@]}"; do record_skip "fs.$w.$1" "$2"; done
}

# Sets FS_DIR (where the workloads run) and FS_PIDS (daemons whose CPU counts).
fs_setup() {
  local root=$FS_ROUND_DIR
  FS_PIDS=()
  FS_STATS=
  # The backupd this configuration ships to (fs_wait_idle and the CPU figures watch it).
  FS_BACKUPD_PID=$FS_DISK_BACKUPD_PID BACKUPD_PORT=${FS_DISK_BACKUPD_PORT:-}
  SERVER_ID=${FS_DISK_SERVER_ID:-} BACKUPD_STATE=${FS_DISK_BACKUPD_STATE:-}
  case $1 in
    native)
      FS_DIR=$root/native
      mkdir -p "$FS_DIR"
      ;;
    pll|pll-xattr)
      local opts=source=$root/$1-src
      [[ $1 == pll-xattr ]] && opts+=,xattr
      FS_DIR=$root/$1-mnt
      mkdir -p "$root/$1-src" "$FS_DIR"
      start_fuse "$1" "$FS_DIR" "$PLL" -f -o "$opts" "$FS_DIR"
      FS_PIDS=("$DAEMON_PID")
      ;;
    backupfs-detached)
      FS_DIR=$root/backupfs-detached
      mkdir -p "$FS_DIR"
      mount_backupfs_detached "$FS_DIR"
      FS_PIDS=("$BACKUPFS_PID")
      ;;
    backupfs|backupfs-tmpfs)
      if [[ $1 == backupfs-tmpfs ]]; then
        FS_BACKUPD_PID=$FS_TMPFS_BACKUPD_PID BACKUPD_PORT=$FS_TMPFS_BACKUPD_PORT
        SERVER_ID=$FS_TMPFS_SERVER_ID BACKUPD_STATE=$FS_TMPFS_BACKUPD_STATE
      fi
      FS_DIR=$root/$1
      mkdir -p "$FS_DIR"
      mount_backupfs "$FS_DIR"
      FS_PIDS=("$BACKUPFS_PID")
      wait_volume "$BACKUPD_STATE"
      FS_STATS=$VOLUME_DIR/stats
      fs_wait_idle >/dev/null  # the (empty) baseline
      ;;
  esac
}

# Unmounts; what the configuration wrote stays until the end of the round (see the top).
fs_teardown() {
  case $1 in
    native) ;;
    pll) record_hwm passthrough_ll fs "${FS_PIDS[0]}"; unmount_fuse "$FS_DIR" ;;
    pll-xattr) record_hwm passthrough_ll-xattr fs "${FS_PIDS[0]}"; unmount_fuse "$FS_DIR" ;;
    backupfs|backupfs-tmpfs)
      [[ $1 == backupfs ]] && record_hwm backupfs fs "${FS_PIDS[0]}"
      unmount_backupfs "$FS_DIR"
      ;;
    backupfs-detached) unmount_fuse "$FS_DIR" ;;  # gives up shipping after its 10 s grace
  esac
}

# Prints the seconds backupfs kept working after the call (0 for the other configurations).
fs_wait_idle() {
  if ((${#FS_PIDS[@]} == 0)) || [[ -z $FS_STATS ]]; then
    echo 0
    return
  fi
  tools wait-idle --window "$IDLE_WINDOW" --pid "${FS_PIDS[0]}" --pid "$FS_BACKUPD_PID" \
    --stats "$FS_STATS" --timeout 900 || die "backupfs still busy after 900 s"
}

# fs_measure CFG WORKLOAD AMOUNT CMD...: runs CMD, records fs.WORKLOAD.CFG = AMOUNT / wall and
# the daemons' CPU until idle.
fs_measure() {
  local cfg=$1 w=$2 amount=$3
  shift 3
  local cpu0 bcpu0 res wall lag
  cpu0=$(cpu_s "${FS_PIDS[@]}")
  bcpu0=$(cpu_s "$FS_BACKUPD_PID")
  res=$(tools measure --stdout "$WORK/logs/$w-$cfg.out" -- "$@") ||
    die "$w on $cfg failed: $(tail -5 "$WORK/logs/$w-$cfg.out")"
  wall=$(json_get "$res" wall)
  lag=$(fs_wait_idle)
  record "fs.$w.$cfg" "$(calc "$amount / $wall")"
  if [[ $cfg != native ]]; then
    record "fs.$w.$cfg.cpu" "$(calc "$(cpu_s "${FS_PIDS[@]}") - $cpu0")"
  fi
  if [[ $cfg == backupfs ]]; then
    record "fs.$w.backupd.cpu" "$(calc "$(cpu_s "$FS_BACKUPD_PID") - $bcpu0")"
    record "fs.$w.backupfs.lag" "$lag"
  elif [[ $cfg == backupfs-tmpfs ]]; then
    record "fs.$w.backupfs-tmpfs.backupd_cpu" "$(calc "$(cpu_s "$FS_BACKUPD_PID") - $bcpu0")"
    record "fs.$w.backupfs-tmpfs.lag" "$lag"
  fi
}

# The diagnostic configurations run only the workloads that have a target (seqwrite, randwrite,
# fsyncwrite, untar): the reads and walks ship nothing, so they would only add minutes.
# (randwrite then finds fio's file in the page cache from seqwrite instead of from seqread: the
# same warm start.) fio's file stays: deleting it would put a deletion before the untar.
fs_run_workloads() {
  local cfg=$1 d=$FS_DIR full=1
  [[ $cfg == backupfs-tmpfs || $cfg == backupfs-detached ]] && full=0
  local fio=(fio --directory="$d" --filename=fio.dat --ioengine=psync --fallocate=none
             --numjobs=1 --output-format=terse)
  if have fio; then
    fs_measure "$cfg" seqwrite "$FIO_MIB" \
      "${fio[@]}" --name=seqwrite --rw=write --bs=1M --size="${FIO_MIB}M" --end_fsync=1
    if ((full)); then
      drop_caches
      fs_measure "$cfg" seqread "$FIO_MIB" \
        "${fio[@]}" --name=seqread --rw=read --bs=1M --size="${FIO_MIB}M"
    fi
    fs_measure "$cfg" randwrite "$((RAND_MIB * 256))" \
      "${fio[@]}" --name=randwrite --rw=randwrite --bs=4k --size="${FIO_MIB}M" \
      --io_size="${RAND_MIB}M" --end_fsync=1
    fs_measure "$cfg" fsyncwrite "$FSYNC_WRITES" \
      "${fio[@]}" --name=fsyncwrite --rw=randwrite --bs=4k --size="${FIO_MIB}M" \
      --io_size="$((FSYNC_WRITES * 4))k" --fsync=1
  else
    local w
    for w in seqwrite seqread randwrite fsyncwrite; do
      record_skip "fs.$w.$cfg" "skipped: fio not installed"
    done
  fi
  [[ $cfg != native ]] && fs_trace_begin "$d"
  fs_measure "$cfg" untar "$TAR_ENTRIES" tar -xf "$TARBALL" -C "$d"
  [[ $cfg != native ]] && fs_trace_end "$cfg"
  if ((full)); then
    drop_caches
    fs_measure "$cfg" walk_cold "$TAR_ENTRIES" find "$d/src" -printf '%s %m %T@\n'
    fs_measure "$cfg" walk_warm "$TAR_ENTRIES" find "$d/src" -printf '%s %m %T@\n'
  fi
  return 0
}

# The untar's FUSE requests (lib.sh fuse_trace_*): the trace runs from just before tar starts
# until the daemons are idle again (fs_measure's wait), outside the timed part.
fs_trace_begin() { [[ -z $FUSE_TRACE ]] || fuse_trace_start "$1"; }

# fs_trace_end CFG: records fs.untar_requests.CFG (requests per entry) and
# fs.untar_requests.CFG.FUSE_OPCODE (the same, per opcode); "skipped: reason" without tracing.
fs_trace_end() {
  local key=fs.untar_requests.$1 counts op n total=0
  if [[ -z $FUSE_TRACE ]]; then
    record_skip "$key" "skipped: $FUSE_TRACE_SKIP"
    return 0
  fi
  fuse_trace_stop
  if ! counts=$(fuse_trace_counts); then
    record_skip "$key" "skipped: $FUSE_TRACE_SKIP"
    return 0
  fi
  while read -r op n; do
    [[ -n $op ]] || continue
    record "$key.$op" "$(calc "$n / $TAR_ENTRIES")"
    total=$((total + n))
  done <<<"$counts"
  record "$key" "$(calc "$total / $TAR_ENTRIES")"
}
