# Section 1: what does the application pay for running on backupfs?
#
# The same workloads run on three directories of the same ext4 filesystem:
#   native    the directory itself
#   pll       libfuse's passthrough_ll example mounted over a directory: the cost of plain FUSE
#   backupfs  backupfs mounted over a directory, recording and shipping to a local backupd
# so backupfs/pll isolates what backupfs adds beyond FUSE itself, and backupfs/native is what a
# user sees. Every round runs all three back to back; ratios are taken within a round.
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
#   seqwrite   fio, 1 MiB sequential writes of FIO_MIB, fsync at the end
#   seqread    fio, 1 MiB sequential reads of that file after dropping the page cache
#   randwrite  fio, 4 KiB random writes (RAND_MIB of them) into that file, fsync at the end
#   untar      tar -xf of a deterministic ~15k-entry source tree
#   walk_cold  find -printf of every entry's size/mode/mtime (stats all) after dropping caches
#   walk_warm  the same again right away
# Daemon CPU (utime+stime from /proc/PID/stat) is taken from the start of a workload until the
# daemons are idle again, so for backupfs it includes shipping the change to backupd; backupd's
# CPU is reported separately. "lag" is how long backupfs kept shipping after the workload ended.

FS_WORKLOADS=(seqwrite seqread randwrite untar walk_cold walk_warm)

fs_overhead_section() {
  local root=$WORK/fs cfg
  mkdir -p "$root"
  TARBALL=$root/src.tar
  log "fs: generating a $TAR_ENTRIES-entry tarball"
  tools gen-tarball "$TARBALL" --entries "$TAR_ENTRIES" >/dev/null
  IFS=, read -ra FS_CONFIGS <<<"$FS_CONFIG_LIST"
  local tmpfs_skip=
  FS_TMPFS_BACKUPD_PID=
  for cfg in "${FS_CONFIGS[@]}"; do
    [[ $cfg =~ ^(native|pll|backupfs|backupfs-tmpfs|backupfs-detached)$ ]] ||
      die "unknown --fs-configs entry '$cfg' (native, pll, backupfs, backupfs-tmpfs, backupfs-detached)"
    if [[ $cfg == backupfs-tmpfs ]]; then
      if tmpfs_mount "$root/tmpfs" "$TMPFS_FS_MIB"; then
        start_backupd "$root/tmpfs/state"
        FS_TMPFS_BACKUPD_PID=$BACKUPD_PID FS_TMPFS_BACKUPD_PORT=$BACKUPD_PORT
        FS_TMPFS_SERVER_ID=$SERVER_ID FS_TMPFS_BACKUPD_STATE=$BACKUPD_STATE
      else
        tmpfs_skip="skipped: no room for a ${TMPFS_FS_MIB} MiB tmpfs (MemAvailable)"
      fi
    fi
  done

  start_backupd "$root/state"
  FS_DISK_BACKUPD_PID=$BACKUPD_PID FS_DISK_BACKUPD_PORT=$BACKUPD_PORT
  FS_DISK_SERVER_ID=$SERVER_ID FS_DISK_BACKUPD_STATE=$BACKUPD_STATE
  for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    for cfg in "${FS_CONFIGS[@]}"; do
      if [[ $cfg == pll && -n $PLL_SKIP ]]; then
        fs_skip_all pll "skipped: $PLL_SKIP"
        continue
      fi
      if [[ $cfg == backupfs-tmpfs && -n $tmpfs_skip ]]; then
        fs_skip_all backupfs-tmpfs "$tmpfs_skip"
        continue
      fi
      log "fs: round $ROUND, $cfg"
      fs_setup "$cfg"
      fs_run_workloads "$cfg"
      fs_teardown "$cfg"
    done
  done
  ROUND=0
  record_hwm backupd fs "$FS_DISK_BACKUPD_PID"
  stop_pid "$FS_DISK_BACKUPD_PID"
  if [[ -n $FS_TMPFS_BACKUPD_PID ]]; then
    stop_pid "$FS_TMPFS_BACKUPD_PID"
    unbind "$root/tmpfs"
  fi
  free_space "$root"
}

fs_skip_all() {  # cfg reason
  local w
  for w in "${FS_WORKLOADS[@]}"; do record_skip "fs.$w.$1" "$2"; done
}

# Sets FS_DIR (where the workloads run) and FS_PIDS (daemons whose CPU counts).
fs_setup() {
  local root=$WORK/fs
  FS_PIDS=()
  FS_STATS=
  # The backupd this configuration ships to (fs_wait_idle and the CPU figures watch it).
  FS_BACKUPD_PID=$FS_DISK_BACKUPD_PID BACKUPD_PORT=$FS_DISK_BACKUPD_PORT
  SERVER_ID=$FS_DISK_SERVER_ID BACKUPD_STATE=$FS_DISK_BACKUPD_STATE
  case $1 in
    native)
      FS_DIR=$root/native
      mkdir -p "$FS_DIR"
      ;;
    pll)
      FS_DIR=$root/pll-mnt
      mkdir -p "$root/pll-src" "$FS_DIR"
      start_fuse passthrough_ll "$FS_DIR" "$PLL" -f -o "source=$root/pll-src" "$FS_DIR"
      FS_PIDS=("$DAEMON_PID")
      ;;
    backupfs-detached)
      FS_DIR=$root/backupfs-detached
      mkdir -p "$FS_DIR"
      mount_backupfs_detached "$FS_DIR"
      FS_PIDS=("$BACKUPFS_PID")
      ;;
    backupfs|backupfs-tmpfs)
      local state=$root/state
      if [[ $1 == backupfs-tmpfs ]]; then
        state=$root/tmpfs/state
        FS_BACKUPD_PID=$FS_TMPFS_BACKUPD_PID BACKUPD_PORT=$FS_TMPFS_BACKUPD_PORT
        SERVER_ID=$FS_TMPFS_SERVER_ID BACKUPD_STATE=$FS_TMPFS_BACKUPD_STATE
      fi
      FS_DIR=$root/$1
      mkdir -p "$FS_DIR"
      mount_backupfs "$FS_DIR"
      FS_PIDS=("$BACKUPFS_PID")
      wait_volume "$state"
      FS_STATS=$VOLUME_DIR/stats
      fs_wait_idle >/dev/null  # the (empty) baseline
      ;;
  esac
}

fs_teardown() {
  case $1 in
    native) rm -rf "$WORK/fs/native" ;;
    pll)
      record_hwm passthrough_ll fs "${FS_PIDS[0]}"
      unmount_fuse "$FS_DIR"
      rm -rf "$WORK/fs/pll-src"
      ;;
    backupfs|backupfs-tmpfs)
      [[ $1 == backupfs ]] && record_hwm backupfs fs "${FS_PIDS[0]}"
      unmount_backupfs "$FS_DIR"
      rm -rf "$FS_DIR"
      ;;
    backupfs-detached)
      unmount_fuse "$FS_DIR"  # gives up shipping after its 10 s grace
      rm -rf "$FS_DIR"
      ;;
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
# untar): the reads and walks ship nothing, so they would only add minutes. (randwrite then finds
# fio's file in the page cache from seqwrite instead of from seqread: the same warm start.)
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
    rm -f "$d/fio.dat"
    fs_wait_idle >/dev/null
  else
    local w
    for w in seqwrite seqread randwrite; do record_skip "fs.$w.$cfg" "skipped: fio not installed"; done
  fi
  fs_measure "$cfg" untar "$TAR_ENTRIES" tar -xf "$TARBALL" -C "$d"
  if ((full)); then
    drop_caches
    fs_measure "$cfg" walk_cold "$TAR_ENTRIES" find "$d/src" -printf '%s %m %T@\n'
    fs_measure "$cfg" walk_warm "$TAR_ENTRIES" find "$d/src" -printf '%s %m %T@\n'
  fi
  rm -rf "$d/src"
  fs_wait_idle >/dev/null
}
