#!/bin/bash
# Parallel restore and re-replication (issue 13): the restore of the 2 GiB dataset's snapshot
# from 1, 2 and 3 sources, and the time a replacement replica takes to become current.
#
#   bash bench/restore_sources.sh BUILD_DIR [--rounds N] [--rate MIB_S] [--smoke]
#
# Three replicators serving restores (--listen) hold copies of the volume and of its snapshot.
# `bkptool restore --from` names 1 (r1), 2 (r1,r2) or 3 (r1,r2,r3) of them, two ways:
#   local   the replicators as they are: all on this machine's 2 cores and one disk, with
#           bkptool itself (the worst case for parallelism: there is nothing to add up)
#   remote  each replicator behind its own relay passing at most RATE MiB/s (default 40) to
#           bkptool (bench/tools.py relay): a replica behind its own link, as in a deployment
# Rounds are interleaved (every configuration once per round); each row is the median, with
# the ratio against 1 source of the same kind from the same run. The first restore of each
# kind is compared byte for byte with the source.
#
# Replacement: replica_grace_seconds = 10; a fourth replicator joins (not placed: 4 copies are
# wanted and 4 exist), r3 is killed (SIGKILL), and the time from the kill until `bkptool status`
# shows the new copy on r4 current is measured; less the grace, that is the fill time of a
# replacement replica from the mirror.
#
# Standalone, not part of run.sh; as root, ~25 GiB free under /var/tmp, ~10 minutes. --smoke: a
# tiny dataset and one round (checks the script, its numbers mean nothing). Leaves no mount or
# process behind (EXIT trap, by PID).
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
BUILD=$(cd "${1:?usage: restore_sources.sh BUILD_DIR [--rounds N] [--rate MIB_S] [--smoke]}" && pwd)
shift
ROUNDS=3 RATE=40 SMOKE=0
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --smoke) SMOKE=1 ROUNDS=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
WORK=$(mktemp -d /var/tmp/bkp-restore.XXXXXX)
RAW=$WORK/raw.jsonl
ROUND=0
BACKUPD=$BUILD/server/backupd REPLICATOR=$BUILD/replicator/replicator
BACKUPFS=$BUILD/fs/backupfs BKPTOOL=$BUILD/tools/bkptool
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
trap 'cleanup_all; rm -rf "$WORK"' EXIT
APP=$WORK/app
mkdir -p "$APP"

GRACE=10
cat >"$WORK/backupd.toml" <<EOF
copies = 4
replica_grace_seconds = $GRACE
http_listen = "off"
EOF
BACKUPD_CONFIG=$WORK/backupd.toml start_backupd "$WORK/state"
ME_FILE=$WORK/operator/identity.pem
ME=$("$BKPTOOL" --identity "$ME_FILE" --show-id | head -1)
declare -A PID ID LISTEN RELAY
for i in 1 2 3; do
  start_replicator "r$i" "$WORK/r$i" --listen 127.0.0.1:0 --listen-port-file "$WORK/r$i.listen" \
    --operator-id "$ME"
  PID[$i]=$DAEMON_PID
  ID[$i]=$("$REPLICATOR" --root "$WORK/r$i" --show-id)
done

if ((SMOKE)); then
  tools gen-dataset "$APP" --large 2 --large-mib 16 --small 300 >/dev/null
else
  tools gen-dataset "$APP" >/dev/null  # 4 x 448 MiB + 20,000 small files: about 2 GiB
fi
log "dataset: $(du -sh "$APP" | cut -f1)"
mount_backupfs "$APP" 30s

# The first snapshot, once every replica holds it.
SNAP=
for ((t = 0; t < 1800; t++)); do
  SNAP=$(bkptool --json snapshots "$VOL_HOST" "$APP" 2>/dev/null | "$PY" -c '
import json, sys
doc = json.load(sys.stdin)
s = doc["snapshots"][0] if doc.get("snapshots") else None
if s and {"r1", "r2", "r3"} <= set(s["holders"]):
    print(s["id"], s["bytes"])' || true)
  [[ -n $SNAP ]] && break
  sleep 1
done
[[ -n $SNAP ]] || die "no snapshot reached all three replicas in 30 minutes"
read -r SNAP_ID SNAP_BYTES <<<"$SNAP"
log "snapshot $SNAP_ID: $SNAP_BYTES bytes on backupd, r1, r2 and r3"

for i in 1 2 3; do
  LISTEN[$i]=$(tr -dc 0-9 <"$WORK/r$i.listen")
  start_daemon "relay-r$i" "$PY" -S "$BENCH/tools.py" relay --target "${LISTEN[$i]}" \
    --rate "$RATE" --port-file "$WORK/relay$i.port"
  for ((t = 0; t < 100; t++)); do [[ -s $WORK/relay$i.port ]] && break; sleep 0.05; done
  RELAY[$i]=$(tr -dc 0-9 <"$WORK/relay$i.port")
done

restore_once() {  # kind n
  local kind=$1 n=$2 from="" i port t0 t1
  for ((i = 1; i <= n; i++)); do
    if [[ $kind == local ]]; then port=${LISTEN[$i]}; else port=${RELAY[$i]}; fi
    from+="${from:+,}${ID[$i]}@127.0.0.1:$port"
  done
  rm -rf "$WORK/out"
  t0=$(now)
  bkptool --identity "$ME_FILE" -q --json restore "$VOL_HOST" "$APP" --snapshot "$SNAP_ID" \
    --to "$WORK/out" --from "$from" >"$WORK/last.json" 2>>"$WORK/logs/bkptool.log" ||
    die "restore from $kind $n failed: $(cat "$WORK/last.json")"
  t1=$(now)
  if ((ROUND == 1)) && [[ $n == 3 ]]; then
    tools verify "$APP" "$WORK/out" >/dev/null || die "the $kind restore differs from the source"
  fi
  record "restore_${kind}_$n" "$(calc "$t1 - $t0")"
  log "round $ROUND: $kind, $n source(s): $(calc "$t1 - $t0") s ($("$PY" -c '
import json, sys
print(", ".join("%s %d parts" % (s["name"], s["parts"]) for s in json.load(open(sys.argv[1]))["sources"]))' "$WORK/last.json"))"
}

for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  for kind in local remote; do
    for n in 1 2 3; do restore_once "$kind" "$n"; done
  done
done
rm -rf "$WORK/out"

# Replacement: r4 joins, r3 dies.
start_replicator r4 "$WORK/r4"
copy_state() {  # replica -> its copy's state in `status`, or "none"
  bkptool --json status "$VOL_HOST" "$APP" 2>/dev/null | "$PY" -c '
import json, sys
doc = json.load(sys.stdin)
for c in doc["volumes"][0].get("copies", []):
    if c["name"] == sys.argv[1]:
        print(c["state"]); break
else:
    print("none")' "$1" || echo none
}
measured() {  # replica -> yes once backupd has its usage
  bkptool --json status 2>/dev/null | "$PY" -c '
import json, sys
print("yes" if any(r["name"] == sys.argv[1] and r.get("measured") for r in json.load(sys.stdin).get("replicators", [])) else "no")' "$1" || echo no
}
for ((t = 0; t < 600; t++)); do [[ $(measured r4) == yes ]] && break; sleep 0.1; done
[[ $(measured r4) == yes ]] || die "r4 never reported its usage"
T_KILL=$(now)
kill9_pid "${PID[3]}" || die "r3 survived SIGKILL"
forget_pid "${PID[3]}"
for ((t = 0; t < 36000; t++)); do [[ $(copy_state r4) == current ]] && break; sleep 0.1; done
[[ $(copy_state r4) == current ]] || die "r4's copy never became current"
T_CURRENT=$(now)
record replacement_from_kill "$(calc "$T_CURRENT - $T_KILL")"

"$PY" - "$RAW" "$SNAP_BYTES" "$RATE" "$GRACE" "$(du -sb "$APP" | cut -f1)" <<'EOF'
import json, statistics, sys
raw, snap_bytes, rate, grace, tree_bytes = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
values = {}
for line in open(raw):
    r = json.loads(line)
    values.setdefault(r["key"], []).append(r["value"])
MiB = 1 << 20
print(f"\nrestore of a {snap_bytes / MiB:.0f} MiB snapshot ({len(values['restore_local_1'])} rounds, median):")
print(f"{'sources':<36}{'seconds':>9}{'MiB/s':>9}{'vs 1':>7}")
for kind, label in (("local", "on this machine"), ("remote", f"each behind a {rate} MiB/s link")):
    base = statistics.median(values[f"restore_{kind}_1"])
    for n in (1, 2, 3):
        m = statistics.median(values[f"restore_{kind}_{n}"])
        print(f"{f'{n} {label}':<36}{m:>9.2f}{snap_bytes / MiB / m:>9.1f}{base / m:>6.2f}x")
t = values["replacement_from_kill"][0]
fill = t - grace
print(f"\nreplacement replica: current {t:.1f} s after the kill of a placed one "
      f"(grace {grace} s, then {fill:.1f} s to fill {tree_bytes / MiB:.0f} MiB from the mirror, "
      f"{tree_bytes / MiB / max(fill, 0.001):.0f} MiB/s)")
EOF
