# Section 3: how fast does the server take in a node, and what do replicas cost?
#
# For 0, 1 and 2 replicas in turn, a fresh backupd (and replicators) start, the page cache is
# dropped, and backupfs is mounted over the dataset: it ships the whole tree as its baseline.
# Timed from just before the mount until the mirror, then every replica, equals the source
# (metadata of every entry; the bytes are verified once, in round 1, outside the timing).
#
#   ingest MiB/s      dataset bytes / seconds until the mirror converged
#   fan-out           seconds until all replicas converged, 1 vs 2 replicas; the second
#                     replica's cost is t(2)/t(1) - 1, per round
#   peak RSS          VmHWM of every daemon just before it is stopped
#   CPU               backupfs and backupd utime+stime over the run
#   TLS cost          the runs with no and with 2 replicas again with TLS off on every daemon
#                     (BENCH_TLS=0, srv.notls.*), in the same round: ingest and time to all
#                     replicas with TLS / without
#   local copy        the same dataset, cold, copied on the same disk by `cp -a` and by
#                     `rsync -a` (two processes and a pipe, as a node and backupd), each followed
#                     by `sync -f` (backupd's mirror is durable when it is acknowledged), in the
#                     same round: what this machine's disk and cores give a local copy, against
#                     which ingest is also reported as a ratio (srv.copy.*)
#
# Diagnostic (unless --no-diagnostics): each round then repeats the three runs with backupd's
# state directory and the replicas' roots on a tmpfs (the dataset itself stays on disk and is
# still read cold). On disk, the mirror and every replica are one more full copy written to the
# same disk as the source; on tmpfs that disk traffic is gone, so what is left is the software's
# own cost (and the source read). Recorded as srv.tmpfs.*; peak RSS is taken from the disk runs.

server_section() {
  local root=$WORK/srv nrep
  mkdir -p "$root"
  tools listing "$DATA" >"$root/listing.json"
  local tmpfs=
  if ((DIAG)); then
    if tmpfs_mount "$root/tmpfs" "$TMPFS_SRV_MIB"; then
      tmpfs=$root/tmpfs
    else
      record_skip srv.tmpfs "skipped: no room for a ${TMPFS_SRV_MIB} MiB tmpfs (MemAvailable)"
    fi
  fi
  for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    # TLS off runs first in even rounds, so neither side always gets the first run of a round.
    if ((ROUND % 2 == 0)); then server_notls_runs "$root"; fi
    for nrep in 0 1 2; do
      log "server: round $ROUND, baseline with $nrep replica(s)"
      server_run "$nrep" "$root" srv
    done
    if ((ROUND % 2 == 1)); then server_notls_runs "$root"; fi
    server_copy_runs "$root"
    if [[ -n $tmpfs ]]; then
      for nrep in 0 1 2; do
        log "server: round $ROUND, baseline with $nrep replica(s), state and replicas on tmpfs"
        server_run "$nrep" "$tmpfs" srv.tmpfs
      done
    fi
  done
  ROUND=0
  [[ -n $tmpfs ]] && unbind "$tmpfs"
  free_space "$root"
}

# The TLS-off half of the TLS cost rows: no replica and 2 replicas, every daemon --no-tls.
server_notls_runs() {
  local nrep
  for nrep in 0 2; do
    log "server: round $ROUND, baseline with $nrep replica(s), TLS off"
    BENCH_TLS=0 server_run "$nrep" "$1" srv.notls
  done
}

# The local-copy baselines: the dataset copied cold on the same disk, then the filesystem synced.
server_copy_runs() {
  local tool dst t0 s
  for tool in cp rsync; do
    if ! have "$tool"; then
      record_skip "srv.copy.$tool" "skipped: $tool not installed (apt-get install $tool)"
      continue
    fi
    dst=$1/copy-$ROUND-$tool
    log "server: round $ROUND, local copy of the dataset with $tool"
    drop_caches
    t0=$(now)
    case $tool in
      cp) cp -a "$DATA/." "$dst" ;;
      rsync) rsync -a "$DATA/" "$dst/" ;;
    esac || die "server: $tool of the dataset failed"
    sync -f "$dst"
    s=$(calc "$(now) - $t0")
    record "srv.copy.$tool" "$s"
    record "srv.copy.$tool.mibs" "$(calc "$DATA_BYTES / 1048576 / $s")"
    free_space "$dst"
  done
}

# server_run NREP BASE PREFIX: one baseline into a fresh backupd (state and replicas under
# BASE), results recorded as PREFIX.*.
server_run() {
  local nrep=$1 root=$2/run-$ROUND-$1 key=$3 i
  local -a rpids=() copies=()
  start_backupd "$root/state"
  for ((i = 1; i <= nrep; i++)); do
    start_replicator "r$i" "$root/r$i"
    rpids+=("$DAEMON_PID")
    copies+=(--copy "r$i=$(replica_tree "$root/r$i" "$DATA")")
  done
  drop_caches

  local t0 res mirror_s all_s
  t0=$(now)
  mount_backupfs "$DATA"
  wait_volume "$root/state"
  res=$(tools wait-converged --listing "$WORK/srv/listing.json" --t0 "$t0" \
    --copy "mirror=$VOLUME_DIR/mirror" "${copies[@]}") ||
    die "server: no convergence with $nrep replica(s): $res"
  mirror_s=$(json_get "$res" mirror)
  record "$key.mirror.r$nrep" "$mirror_s"
  record "$key.ingest.r$nrep" "$(calc "$DATA_BYTES / 1048576 / $mirror_s")"
  if ((nrep > 0)); then
    all_s=$("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); d.pop("mirror"); print(max(d.values()))' "$res")
    record "$key.replicas.r$nrep" "$all_s"
  fi
  record "$key.cpu.backupfs.r$nrep" "$(cpu_s "$BACKUPFS_PID")"
  record "$key.cpu.backupd.r$nrep" "$(cpu_s "$BACKUPD_PID")"
  ((nrep > 0)) && record "$key.cpu.replicators.r$nrep" "$(cpu_s "${rpids[@]}")"

  if [[ $key == srv ]]; then
    record_hwm backupfs ingest "$BACKUPFS_PID"
    record_hwm backupd ingest "$BACKUPD_PID"
    for i in "${rpids[@]}"; do record_hwm replicator ingest "$i"; done
  fi
  unmount_backupfs "$DATA"
  if ((ROUND == 1)); then
    local -a trees=("$VOLUME_DIR/mirror")
    for ((i = 1; i <= nrep; i++)); do trees+=("$(replica_tree "$root/r$i" "$DATA")"); done
    tools verify "$DATA" "${trees[@]}" || die "server ($key): a copy differs from the source"
  fi
  for ((i = ${#rpids[@]} - 1; i >= 0; i--)); do stop_pid "${rpids[i]}"; done
  stop_pid "$BACKUPD_PID"
  free_space "$root"
}
