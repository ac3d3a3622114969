# Section 2: what does an incremental backup cost, backupfs against rsync, restic and borg?
#
# Setup: backupd and one replicator start, backupfs is mounted over the dataset and ships its
# baseline; a bind mount of the dataset made before that mount gives the other tools the real
# files (not through FUSE). rsync (--no-whole-file --inplace into a local directory), restic and
# borg (local repositories; restic's password and borg's --encryption=none via the environment)
# each make a full backup first ("full" rows, for reference).
#
# Each round then:
#   change    1 MiB of new bytes inside one large file plus 10 small files touched, made through
#             the backupfs mount (tools.py change; the files are looked up through the mount
#             first, as the application working on them would have, so the counters start with
#             the application's own path lookups done). backupfs: time until the replica (and the
#             mirror) hold the new bytes and mtimes, then, once idle, the deltas of backupfs's
#             /proc io (read_bytes = from disk, rchar = every read syscall incl. FUSE requests),
#             backupd's stats (wire_bytes, data_bytes) and CPU of all three daemons.
#             Then each other tool backs up the same change: wall time, CPU, bytes read (its own
#             and its children's /proc io), bytes added to its repository (du -sb delta).
#   nochange  the same with no change at all; for backupfs, the same counters over IDLE_S seconds.
# The page cache is dropped before every measurement, so "disk read" is what a cold run reads.
#
# Diagnostic (unless --no-diagnostics), after backupfs is unmounted and the copies verified:
# libfuse's passthrough_ll is mounted over the dataset (source=$DATA, a mountpoint of its own)
# and each round's change is made again through it, the same files, offset and size. Its
# /proc/PID/io deltas say what the application's own write costs in disk reads (and in FUSE
# request bytes, rchar) through plain FUSE, the yardstick for backupfs's read_bytes and rchar.

incremental_section() {
  local root=$WORK/inc
  mkdir -p "$root"
  NATIVE=$root/native
  bind_mount "$DATA" "$NATIVE"
  export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$root/restic-cache
  export BORG_BASE_DIR=$root/borg-base BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes \
    BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_PASSPHRASE=

  start_backupd "$root/state"
  start_replicator r1 "$root/r1"
  INC_REPL_PID=$DAEMON_PID
  tools listing "$DATA" >"$root/listing.json"
  drop_caches
  local t0 res
  t0=$(now)
  mount_backupfs "$DATA"
  wait_volume "$root/state"
  INC_MIRROR=$VOLUME_DIR/mirror
  INC_REPLICA=$(replica_tree "$root/r1" "$DATA")
  log "incremental: full backups (backupfs baseline, rsync, restic, borg)"
  res=$(tools wait-converged --listing "$root/listing.json" --t0 "$t0" \
    --copy "mirror=$INC_MIRROR" --copy "replica=$INC_REPLICA") ||
    die "incremental: baseline did not converge: $res"
  record inc.backupfs.full.wall "$(json_get "$res" replica)"
  inc_wait_idle >/dev/null

  local tool
  for tool in rsync restic borg; do inc_tool "$tool" full; done

  for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    log "incremental: round $ROUND"
    inc_backupfs change
    for tool in rsync restic borg; do inc_tool "$tool" change; done
    inc_backupfs nochange
    for tool in rsync restic borg; do inc_tool "$tool" nochange; done
  done
  ROUND=0

  record_hwm backupfs incremental "$BACKUPFS_PID"
  record_hwm backupd incremental "$BACKUPD_PID"
  record_hwm replicator incremental "$INC_REPL_PID"
  unmount_backupfs "$DATA"
  unbind "$NATIVE"
  tools verify "$DATA" "$INC_MIRROR" "$INC_REPLICA" || die "incremental: a copy differs"
  stop_pid "$INC_REPL_PID"
  stop_pid "$BACKUPD_PID"
  ((DIAG)) && inc_pll
  unset RESTIC_PASSWORD RESTIC_CACHE_DIR BORG_BASE_DIR BORG_PASSPHRASE
  free_space "$root"
}

inc_wait_idle() {
  tools wait-idle --window "$IDLE_WINDOW" --pid "$BACKUPFS_PID" --pid "$BACKUPD_PID" \
    --pid "$INC_REPL_PID" --stats "$VOLUME_DIR/stats" --timeout 600 || die "incremental: daemons never went idle"
}

# The counters backupfs is judged by, as one line: cpu rchar read_bytes wire_bytes data_bytes
inc_counters() {
  local stats
  stats=$(tools stats "$VOLUME_DIR/stats")
  echo "$(cpu_s "$BACKUPFS_PID" "$BACKUPD_PID" "$INC_REPL_PID")" \
    "$(io_of "$BACKUPFS_PID" rchar)" "$(io_of "$BACKUPFS_PID" read_bytes)" \
    "$(json_get "$stats" wire_bytes)" "$(json_get "$stats" data_bytes)"
}

inc_backupfs() {  # change|nochange
  local kind=$1 c0 c1 res plan=$WORK/inc/change-$ROUND.json
  drop_caches
  [[ $kind == change ]] &&
    tools change-plan --pick-from "$NATIVE" --mount "$DATA" --round "$ROUND" --out "$plan"
  read -ra c0 <<<"$(inc_counters)"
  if [[ $kind == change ]]; then
    res=$(tools change --plan "$plan" --mount "$DATA" --copy "replica=$INC_REPLICA" \
      --copy "mirror=$INC_MIRROR") || die "incremental: the change did not arrive: $res"
    record inc.backupfs.change.latency "$(json_get "$res" arrived.replica)"
    record inc.backupfs.change.mirror_latency "$(json_get "$res" arrived.mirror)"
    inc_wait_idle >/dev/null
  else
    sleep "$IDLE_S"
  fi
  read -ra c1 <<<"$(inc_counters)"
  record "inc.backupfs.$kind.cpu" "$(calc "${c1[0]} - ${c0[0]}")"
  record "inc.backupfs.$kind.rchar" "$((c1[1] - c0[1]))"
  record "inc.backupfs.$kind.read_bytes" "$((c1[2] - c0[2]))"
  record "inc.backupfs.$kind.wire" "$((c1[3] - c0[3]))"
  record "inc.backupfs.$kind.data" "$((c1[4] - c0[4]))"
}

# The same change through passthrough_ll (see the top): records inc.pll.change.*.
inc_pll() {
  if [[ -n $PLL_SKIP ]]; then
    record_skip inc.pll.change "skipped: $PLL_SKIP"
    return 0
  fi
  local mnt=$WORK/inc/pll-mnt pid plan c0 c1 res
  mkdir -p "$mnt"
  start_fuse passthrough_ll "$mnt" "$PLL" -f -o "source=$DATA" "$mnt"
  pid=$DAEMON_PID
  for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    log "incremental: round $ROUND, the same change through passthrough_ll (diagnostic)"
    plan=$WORK/inc/change-$ROUND.json  # backupfs's plan of this round: the same files and offset
    drop_caches
    tools change-plan --pick-from "$DATA" --mount "$mnt" --round "$ROUND" --out "$plan"
    c0=("$(cpu_s "$pid")" "$(io_of "$pid" rchar)" "$(io_of "$pid" read_bytes)")
    res=$(tools change --plan "$plan" --mount "$mnt") ||
      die "incremental: the change through passthrough_ll failed: $res"
    c1=("$(cpu_s "$pid")" "$(io_of "$pid" rchar)" "$(io_of "$pid" read_bytes)")
    record inc.pll.change.cpu "$(calc "${c1[0]} - ${c0[0]}")"
    record inc.pll.change.rchar "$((c1[1] - c0[1]))"
    record inc.pll.change.read_bytes "$((c1[2] - c0[2]))"
  done
  ROUND=0
  record_hwm passthrough_ll incremental "$pid"
  unmount_fuse "$mnt"
}

du_bytes() { du -sb "$1" 2>/dev/null | cut -f1; }

# inc_tool rsync|restic|borg full|change|nochange
inc_tool() {
  local tool=$1 kind=$2 root=$WORK/inc
  local -a cmd
  local repo=$root/$tool-repo
  if ! have "$tool"; then
    local pkg=$tool
    [[ $tool == borg ]] && pkg=borgbackup
    record_skip "inc.$tool.$kind" "skipped: $tool not installed (apt-get install $pkg)"
    return 0
  fi
  case $tool in
    rsync)
      mkdir -p "$repo"
      cmd=(rsync -a --no-whole-file --inplace --stats "$NATIVE/" "$repo/")
      ;;
    restic)
      if [[ $kind == full ]]; then
        restic -r "$repo" init >>"$WORK/logs/restic.log" 2>&1 || die "restic init failed"
      fi
      cmd=(restic -r "$repo" backup --host bench "$NATIVE")
      ;;
    borg)
      if [[ $kind == full ]]; then
        borg init --encryption=none "$repo" >>"$WORK/logs/borg.log" 2>&1 || die "borg init failed"
      fi
      cmd=(borg create --stats "$repo::$kind-$ROUND" "$NATIVE")
      ;;
  esac
  local before res out=$WORK/logs/$tool-$kind-$ROUND.out
  before=$(du_bytes "$repo")
  drop_caches
  res=$(tools measure --stdout "$out" -- "${cmd[@]}") || die "$tool $kind failed: $(tail -5 "$out")"
  record "inc.$tool.$kind.wall" "$(json_get "$res" wall)"
  record "inc.$tool.$kind.cpu" "$(json_get "$res" cpu)"
  record "inc.$tool.$kind.rchar" "$(json_get "$res" rchar)"
  record "inc.$tool.$kind.read_bytes" "$(json_get "$res" read_bytes)"
  record "inc.$tool.$kind.added" "$(($(du_bytes "$repo") - before))"
  if [[ $tool == rsync ]]; then  # what the sender pushed down its pipe: rsync's "wire"
    local sent
    sent=$(awk -F': ' '/^Total bytes sent/ { gsub(/[,.]/, "", $2); print $2 }' "$out")
    [[ -n $sent ]] && record "inc.rsync.$kind.wire" "$sent"
  fi
  return 0
}
