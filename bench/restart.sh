# Section 5: what does a restart cost, next to the full baseline of the same volume?
# Section 6: how much memory does backupfs hold while nothing drains its change log?
#
# Why section 5: since issue 9 a restart of backupfs or backupd is a reconcile (the receiver's
# manifest, then block digests of large files whose ctime moved), not a new baseline, and a
# backupd restart that finds the mirror as a replica last held it resumes that replica's stream
# with nothing to send (docs/ARCHITECTURE.md, "The data path"). The issue's
# targets are relative to the baseline, so each round measures both on the dataset of sections
# 2-4 (~2 GiB, 20k files, 4 large), with backupd and two replicators:
#
#   base     fresh registration: backupfs mounted over the dataset (cold cache) ships all of it
#   fs_clean fusermount3 -u (backupfs ships what is left and exits), backupfs mounted again on
#            the same port; backupd reattaches by itself (its link retries with backoff)
#   fs_kill  kill -9 of backupfs, fusermount3 -u of the dead mount, then in the bare directory
#            1 MiB rewritten inside one large file and RST_SMALL small files rewritten whole;
#            backupfs mounted again on the same port
#   bd_term  backupd SIGTERM, started again on the same port with the same --state-dir
#   bd_kill  the same after kill -9
#
# Before each row the daemons are idle and (full mode) the page cache is dropped, so a reconcile
# reads its trees and digests from disk, as after a reboot. For each row:
#   wire   TCP payload bytes, both directions, of each hop: node <-> backupd (backupfs's sockets)
#          and backupd <-> rN (replicator N's sockets), from the kernel's tcp_info (ss), counted
#          from just before the stop (a socket opened since counts whole). Also backupd's stats
#          file (node -> backupd frames and file data; its counters restart with backupd) and, for
#          the backupd rows, the data bytes its replica reconciles planned (its log).
#   read   /proc/PID/io read_bytes (from disk) and rchar of every daemon over the row; the
#          sender of the node hop is backupfs, of the replica hops backupd.
#   time   seconds from the (re)start until each copy's listing (type, size, mode, mtime of every
#          entry) equals the source's AND the daemon that reconciles logged its end ("baseline
#          ...: 100%": a restart that changed nothing leaves the trees equal from the start), or,
#          for a replica backupd resumes, backupd's "replica rN resumes volume" line.
#          "attached": until backupd's session with the node is up again (backupd's link
#          retries with backoff), "rN_connected": until replicator N is back (its own backoff).
# Then bkp_treecmp (content, xattrs, hard links, holes) checks every copy: after every row in
# round 1, after the last row in later rounds; outside the timing.
# Targets (issue 9): wire <= 1% of the volume + what changed; time <= 10% of the baseline's.
#
# Section 6 (memory): backupfs mounted with no backupd attached (never registered), so nothing
# drains its change log; MEM_MIB MiB of 1 MiB writes spread over MEM_FILES files, then MEM_OPS
# metadata operations (create, rename, chmod, unlink). VmHWM and VmRSS (/proc/PID/status) after
# the writes and at the end. Target: <= 64 MiB. Measured once, whatever --rounds says.

RST_ROLES=(backupfs backupd r1 r2)

restart_section() {
  RST_ROOT=$WORK/rst
  mkdir -p "$RST_ROOT"
  RST_NATIVE=$RST_ROOT/native  # the real files, also while backupfs is mounted over $DATA
  bind_mount "$DATA" "$RST_NATIVE"
  TREECMP=$BUILD_DIR/tests/bkp_treecmp
  [[ -x $TREECMP ]] || log "restart: $TREECMP not built (-DBKP_BUILD_TESTS=ON); verifying with tools.py verify instead"
  for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    rst_round
  done
  ROUND=0
  unbind "$RST_NATIVE"
  free_space "$RST_ROOT"
}

rst_round() {
  local run=$RST_ROOT/run-$ROUND res
  mkdir -p "$run"
  RST_RUN=$run
  BACKUPD_QUIET='' start_backupd "$run/state"
  RST_STATE=$run/state
  RST_REPL=()
  start_replicator r1 "$run/r1"
  RST_REPL+=("$DAEMON_PID")
  start_replicator r2 "$run/r2"
  RST_REPL+=("$DAEMON_PID")
  RST_R1=$(replica_tree "$run/r1" "$DATA")
  RST_R2=$(replica_tree "$run/r2" "$DATA")
  BACKUPFS_PID=
  record rst.volume "$(rst_volume_bytes)"

  # base: the full baseline of a fresh registration.
  log "restart: round $ROUND, full baseline (fresh registration, 2 replicas)"
  tools listing "$RST_NATIVE" >"$run/listing.json"
  drop_caches
  rst_mark
  local fs_off bd_off t0
  fs_off=$(rst_size "$WORK/logs/backupfs.log")
  t0=$(now)
  BACKUPFS_QUIET='' mount_backupfs "$DATA"
  wait_volume "$RST_STATE"
  RST_MIRROR=$VOLUME_DIR/mirror
  rst_wait base "$t0" \
    attached - "$WORK/logs/backupfs.log" "$fs_off" 'backupd \S+ attached' \
    mirror "$RST_MIRROR" "$WORK/logs/backupfs.log" "$fs_off" 'baseline \S+: 100%' \
    r1 "$RST_R1" "$WORK/logs/backupfs.log" "$fs_off" 'baseline \S+: 100%' \
    r2 "$RST_R2" "$WORK/logs/backupfs.log" "$fs_off" 'baseline \S+: 100%'
  rst_measure base 0

  # fs_clean: unmount, mount again on the same port.
  log "restart: round $ROUND, backupfs clean restart"
  rst_mark
  unmount_fuse "$DATA"
  drop_caches
  fs_off=$(rst_size "$WORK/logs/backupfs.log")
  t0=$(now)
  rst_remount
  rst_wait_node fs_clean "$t0" "$fs_off"
  rst_measure fs_clean 0

  # fs_kill: kill -9, unmount the dead mount, change the bare directory, mount again.
  log "restart: round $ROUND, backupfs kill -9, changed while down"
  rst_mark
  kill9_pid "$BACKUPFS_PID" || die "restart: backupfs survived kill -9"
  unmount_fuse "$DATA"
  res=$(tools modify "$DATA" --round "$ROUND" --small "$RST_SMALL") || die "restart: modify failed"
  local changed
  changed=$(json_get "$res" changed)
  tools listing "$RST_NATIVE" >"$run/listing.json"
  drop_caches
  fs_off=$(rst_size "$WORK/logs/backupfs.log")
  t0=$(now)
  rst_remount
  rst_wait_node fs_kill "$t0" "$fs_off"
  rst_measure fs_kill "$changed"

  # bd_term, bd_kill: backupd stopped, started again on its port with its state.
  local how
  for how in term kill; do
    log "restart: round $ROUND, backupd restart ($([[ $how == term ]] && echo SIGTERM || echo kill -9))"
    rst_mark
    if [[ $how == kill ]]; then
      kill9_pid "$BACKUPD_PID" || die "restart: backupd survived kill -9"
    fi
    stop_pid "$BACKUPD_PID"
    drop_caches
    bd_off=$(rst_size "$WORK/logs/backupd.log")
    t0=$(now)
    BACKUPD_QUIET='' start_backupd "$RST_STATE" "$BACKUPD_PORT"
    local b=$WORK/logs/backupd.log
    rst_wait "bd_$how" "$t0" \
      attached - "$b" "$bd_off" 'node \S+ \(\S+\) connected for volume' \
      mirror "$RST_MIRROR" "$b" "$bd_off" 'node \S+ \(\S+\) connected for volume' \
      r1 "$RST_R1" "$b" "$bd_off" 'baseline \S+ to r1: 100%|replica r1 resumes volume' \
      r2 "$RST_R2" "$b" "$bd_off" 'baseline \S+ to r2: 100%|replica r2 resumes volume' \
      r1_connected - "$b" "$bd_off" 'replica r1 connected from' \
      r2_connected - "$b" "$bd_off" 'replica r2 connected from'
    rst_measure "bd_$how" 0 "$t0" "$bd_off"
  done

  unmount_backupfs "$DATA"
  stop_pid "${RST_REPL[1]}"
  stop_pid "${RST_REPL[0]}"
  stop_pid "$BACKUPD_PID"
  free_space "$run"
}

rst_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

rst_volume_bytes() {  # regular file bytes of the source
  du -sb --apparent-size "$RST_NATIVE" | cut -f1
}

# backupfs over $DATA again, on the port backupd has registered; no bkptool: backupd's link
# reattaches by itself.
rst_remount() {
  # shellcheck disable=SC2046
  start_fuse backupfs "$DATA" "$BACKUPFS" "$DATA" --listen "127.0.0.1:$NODE_PORT" \
    --port-file "$WORK/backupfs.port" --host "$VOL_HOST" $(node_flags) -f
  BACKUPFS_PID=$DAEMON_PID
}

# After a backupfs restart: the node's reconcile ends with backupfs's "baseline ...: 100%" line;
# the replicas receive what it changed through backupd's live stream (their own streams go on).
rst_wait_node() {  # row t0 log_offset
  local f=$WORK/logs/backupfs.log
  rst_wait "$1" "$2" \
    attached - "$f" "$3" 'backupd \S+ attached' \
    mirror "$RST_MIRROR" "$f" "$3" 'baseline \S+: 100%' \
    r1 "$RST_R1" "$f" "$3" 'baseline \S+: 100%' \
    r2 "$RST_R2" "$f" "$3" 'baseline \S+: 100%'
}

# rst_wait ROW T0 (NAME DIR LOG OFFSET REGEX)...: times each copy (see the top), records
# rst.ROW.NAME, then waits until every daemon is idle. One waiter process per copy: a listing of
# 20k entries takes ~0.2 s, and one waiter checking the copies in turn would add the mirror's
# listing to r1's time and both to r2's.
rst_wait() {
  local row=$1 t0=$2 res name failed=0
  shift 2
  local -a names=() pids=()
  while (($#)); do
    tools wait-converged --listing "$RST_RUN/listing.json" --t0 "$t0" --timeout "$RST_TIMEOUT" \
      --copy "$1=$2" --marker "$1" "$3" "$4" "$5" >"$RST_RUN/wait-$1.json" &
    pids+=("$!")
    names+=("$1")
    shift 5
  done
  for name in "${pids[@]}"; do wait "$name" || failed=1; done
  res=$(for name in "${names[@]}"; do cat "$RST_RUN/wait-$name.json"; done 2>/dev/null | tr '\n' ' ')
  ((failed == 0)) ||
    die "restart ($row): no convergence within $RST_TIMEOUT s: $res (logs in $WORK/logs)"
  for name in "${names[@]}"; do
    record "rst.$row.$name" "$(json_get "$(cat "$RST_RUN/wait-$name.json")" "$name")"
  done
  local r1 r2
  r1=$(json_get "$res" r1)
  r2=$(json_get "$res" r2)
  record "rst.$row.replicas" "$(calc "($r1 > $r2 ? $r1 : $r2)")"  # parenthesized: not awk's >
  tools wait-idle --window "$IDLE_WINDOW" --timeout 600 --stats "$VOLUME_DIR/stats" \
    --pid "$BACKUPFS_PID" --pid "$BACKUPD_PID" --pid "${RST_REPL[0]}" --pid "${RST_REPL[1]}" \
    >/dev/null || die "restart ($row): the daemons never went idle"
}

rst_pid() {
  case $1 in
    backupfs) echo "${BACKUPFS_PID:-}" ;;
    backupd) echo "$BACKUPD_PID" ;;
    r1) echo "${RST_REPL[0]}" ;;
    r2) echo "${RST_REPL[1]}" ;;
  esac
}

# Before a row: the counters it is judged by (per role: pid, read_bytes, rchar; sockets; stats).
declare -A RST_IO0=()
rst_mark() {
  local role pid
  for role in "${RST_ROLES[@]}"; do
    pid=$(rst_pid "$role")
    if [[ -z $pid ]] || ! alive "$pid"; then
      RST_IO0[$role]="none 0 0"
      echo '[]' >"$RST_RUN/net-$role.json"
      continue
    fi
    RST_IO0[$role]="$pid $(io_of "$pid" read_bytes) $(io_of "$pid" rchar)"
    tools net-bytes --pid "$pid" --save "$RST_RUN/net-$role.json" >/dev/null
  done
  RST_STATS0=$(tools stats "$RST_STATE/volumes/$VOL_HOST"/*/stats 2>/dev/null || echo '{"wire_bytes": 0, "data_bytes": 0}')
}

# After a row (daemons idle): records rst.ROW.{wire,read,rchar}.* and the stats deltas.
# rst_measure ROW CHANGED [T0 BACKUPD_LOG_OFFSET]: the last two for the backupd rows, whose stats
# counters restarted with backupd (the file holds the new counters once it was rewritten after
# T0), and whose replica reconciles are read from backupd's log.
rst_measure() {
  local row=$1 changed=$2 t0=${3:-} bd_off=${4:-} role pid p0 r0 c0 r c stats
  record "rst.$row.changed" "$changed"
  for role in "${RST_ROLES[@]}"; do
    pid=$(rst_pid "$role")
    read -r p0 r0 c0 <<<"${RST_IO0[$role]}"
    r=$(io_of "$pid" read_bytes)
    c=$(io_of "$pid" rchar)
    if [[ $pid == "$p0" ]]; then
      r=$((r - r0))
      c=$((c - c0))
    fi
    record "rst.$row.read.$role" "$r"
    record "rst.$row.rchar.$role" "$c"
  done
  local -A wire=()
  for role in backupfs r1 r2; do
    wire[$role]=$(tools net-bytes --pid "$(rst_pid "$role")" --before "$RST_RUN/net-$role.json")
  done
  record "rst.$row.wire.node" "${wire[backupfs]}"
  record "rst.$row.wire.r1" "${wire[r1]}"
  record "rst.$row.wire.r2" "${wire[r2]}"
  record "rst.$row.wire.replica" "$((wire[r1] > wire[r2] ? wire[r1] : wire[r2]))"
  stats=$(tools stats "$VOLUME_DIR/stats")
  local w1 d1 w0 d0
  w1=$(json_get "$stats" wire_bytes)
  d1=$(json_get "$stats" data_bytes)
  if [[ -n $t0 ]]; then
    # backupd counts since it started; an unchanged file (mtime before the restart) means no
    # batch was committed since: nothing came from the node.
    if [[ $(stat -c %Y "$VOLUME_DIR/stats") -lt ${t0%.*} ]]; then w1=0 d1=0; fi
    w0=0 d0=0
    local lb
    lb=$(tools log-bytes "$WORK/logs/backupd.log" --from "$bd_off")
    record "rst.$row.logdata" "$(json_get "$lb" data)"
  else
    w0=$(json_get "$RST_STATS0" wire_bytes)
    d0=$(json_get "$RST_STATS0" data_bytes)
  fi
  record "rst.$row.stats.wire" "$((w1 - w0))"
  record "rst.$row.stats.data" "$((d1 - d0))"
  if ((ROUND == 1)) || [[ $row == bd_kill ]]; then
    rst_verify "$row"
  fi
}

rst_verify() {  # row: every copy equals the source (content included); recorded as rst.ROW.verified
  local out ok=1
  if [[ -x $TREECMP ]]; then
    out=$(timeout 1200 "$TREECMP" "$RST_NATIVE" "$RST_MIRROR" "$RST_R1" "$RST_R2" 2>&1) || ok=0
  else
    out=$(timeout 1200 "$PY" -S "$BENCH/tools.py" verify "$RST_NATIVE" "$RST_MIRROR" "$RST_R1" \
      "$RST_R2" 2>&1) || ok=0
  fi
  ((ok)) || log "restart ($1): a copy differs from the source: $out"
  record "rst.$1.verified" "$ok"
}

# --- section 6 ---------------------------------------------------------------------------------

memory_section() {
  local root=$WORK/mem app res pid
  app=$root/app
  mkdir -p "$app"
  ROUND=1
  log "memory: backupfs with no backupd, $MEM_MIB MiB over $MEM_FILES files + $MEM_OPS metadata operations"
  mount_backupfs_detached "$app"
  pid=$BACKUPFS_PID
  record mem.start.rss "$(mem_kib "$pid" VmRSS)"
  res=$(tools write-files "$app/data" --files "$MEM_FILES" --mib "$MEM_MIB") ||
    die "memory: writes failed: $res"
  record mem.writes.rss "$(mem_kib "$pid" VmRSS)"
  record mem.writes.hwm "$(mem_kib "$pid" VmHWM)"
  res=$(tools churn "$app" --ops "$MEM_OPS") || die "memory: metadata operations failed: $res"
  record mem.end.rss "$(mem_kib "$pid" VmRSS)"
  record mem.end.hwm "$(mem_kib "$pid" VmHWM)"
  record mem.end.anon "$(mem_kib "$pid" RssAnon)"
  record mem.ops "$MEM_OPS"
  unmount_fuse "$app"
  ROUND=0
  free_space "$root"
}

mem_kib() {  # pid field -> bytes of that /proc/PID/status field, summed over the keeper and its worker
  echo $(($(proc_sum status "$2" "$1") * 1024))
}
