# Section 4: how long does backupd take to write a volume's tgz snapshot, against bsdtar?
#
# backupd gets the dataset as a volume (backupfs baseline). Each round, after dropping the page
# cache: backupd's own snapshot of the volume (backupfs_snapshot below), then `bsdtar czf` of the
# mirror tree followed by an fsync of the archive (backupd's snapshot is durable when it is
# written, so the reference pays for durability too). Ratio = bsdtar time / backupd time
# (>= 1 means backupd is at least as fast). backupd goes first so that, while bsdtar runs, every
# scheduled run finds the volume unchanged and writes nothing.

# ---------------------------------------------------------------------------------------------
# The one function to adapt when the way snapshots are made changes.
#
# backupfs_snapshot STATE_DIR VOLUME_DIR
#   backupd (pid $BACKUPD_PID, port $BACKUPD_PORT, --state-dir STATE_DIR) holds the volume at
#   VOLUME_DIR (its tree in VOLUME_DIR/mirror); backupfs is mounted over $DATA. Make backupd write
#   one snapshot of the volume, wait until it is written, print the seconds it took and return 0.
#   Return 2 when this build cannot make snapshots (the row then reads "n/a").
#
# Snapshots are scheduled, not on demand (issue 3): the volume is registered with
# --every $SNAP_EVERY, so this makes a small change through the mount (a run writes only when the
# volume changed) and waits for the next run that wrote a snapshot; its duration is backupd's own
# (catalog run row, `bkptool history --json`: the cut, the archive, its fsync and rename).
# ---------------------------------------------------------------------------------------------
backupfs_snapshot() {
  local history last
  history=$(bkptool --json history "$VOL_HOST" "$DATA" 2>>"$WORK/logs/bkptool.log") || return 2
  last=$(tools history-run --after-last <<<"$history") || return 2
  echo "round $ROUND $EPOCHREALTIME" >"$DATA/.bench-snapshot-marker"
  wait_written_after "$last"
}

# Waits for a run with an id above $1 that wrote a snapshot and prints its duration in seconds.
wait_written_after() {
  local history i secs
  for ((i = 0; i < 2400; i++)); do  # up to 20 minutes: one period plus a slow archive
    history=$(bkptool --json history "$VOL_HOST" "$DATA" 2>>"$WORK/logs/bkptool.log") || true
    if secs=$(tools history-run --written-after "$1" <<<"$history"); then
      echo "$secs"
      return 0
    fi
    sleep 0.5
  done
  log "snapshot: no snapshot written within 20 minutes"
  return 1
}

snapshot_section() {
  local root=$WORK/snap
  mkdir -p "$root"
  start_backupd "$root/state"
  tools listing "$DATA" >"$root/listing.json"
  local t0 res
  t0=$(now)
  mount_backupfs "$DATA" "$SNAP_EVERY"
  wait_volume "$root/state"
  local volume=$VOLUME_DIR
  res=$(tools wait-converged --listing "$root/listing.json" --t0 "$t0" \
    --copy "mirror=$volume/mirror") || die "snapshot: the mirror did not converge: $res"

  local tree_bytes secs status cpu0
  tree_bytes=$(du -sb "$volume/mirror" | cut -f1)
  # The volume's first scheduled run archives it whole whatever the rounds do. Without waiting
  # for it, round 1 measured that run, started before the round and its cache drop (backupd's
  # CPU over the wait: ~1 s of a ~45 s archive). A build without history has no runs to wait for.
  if bkptool --json history "$VOL_HOST" "$DATA" >/dev/null 2>>"$WORK/logs/bkptool.log"; then
    wait_written_after 0 >/dev/null || die "snapshot: the volume's first snapshot was not written"
  fi
  for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    log "snapshot: round $ROUND"
    drop_caches
    status=0
    cpu0=$(cpu_s "$BACKUPD_PID")
    secs=$(backupfs_snapshot "$root/state" "$volume") || status=$?
    if ((status == 0)); then
      record snap.backupd "$secs"
      record snap.backupd.mibs "$(calc "$tree_bytes / 1048576 / $secs")"
      # backupd is otherwise idle here, so its CPU over the wait is the snapshot's.
      record snap.backupd.cpu "$(calc "$(cpu_s "$BACKUPD_PID") - $cpu0")"
    elif ((status == 2)); then
      record_skip snap.backupd "n/a (snapshots not implemented yet)"
    else
      die "snapshot: backupfs_snapshot failed ($status)"
    fi
    if have bsdtar; then
      drop_caches
      res=$(tools measure --stdout "$WORK/logs/bsdtar.out" -- \
        sh -c 'bsdtar czf "$1" -C "$2" . && sync "$1"' sh "$root/bsdtar.tgz" "$volume/mirror") ||
        die "bsdtar failed: $(tail -5 "$WORK/logs/bsdtar.out")"
      record snap.bsdtar "$(json_get "$res" wall)"
      record snap.bsdtar.mibs "$(calc "$tree_bytes / 1048576 / $(json_get "$res" wall)")"
      record snap.bsdtar.cpu "$(json_get "$res" cpu)"
      # The same at gzip level 1, backupd's default level, to tell format cost from level.
      drop_caches
      res=$(tools measure --stdout "$WORK/logs/bsdtar.out" -- \
        sh -c 'bsdtar czf "$1" --options gzip:compression-level=1 -C "$2" . && sync "$1"' sh \
        "$root/bsdtar.tgz" "$volume/mirror") || die "bsdtar failed: $(tail -5 "$WORK/logs/bsdtar.out")"
      record snap.bsdtar1 "$(json_get "$res" wall)"
      record snap.bsdtar1.cpu "$(json_get "$res" cpu)"
      rm -f "$root/bsdtar.tgz"
    else
      record_skip snap.bsdtar "skipped: bsdtar not installed (apt-get install libarchive-tools)"
    fi
  done
  ROUND=0
  record_hwm backupd snapshot "$BACKUPD_PID"
  unmount_backupfs "$DATA"
  stop_pid "$BACKUPD_PID"
  free_space "$root"
}
