#!/usr/bin/env bash
# Issue 16's figures, all from the same run: a snapshot written to S3 (a one-node Ceph radosgw)
# against the same snapshot written to local disk, backupd's catalog calls per second on
# PostgreSQL against SQLite, and the takeover of N volumes when one of two backupd on one
# PostgreSQL catalog is killed. Both storage servers are started in a scratch directory
# (tests/scale/) and stopped at the end. Ratios are taken within each round, then the median over
# the rounds.
#
#   bash bench/scale_out.sh --build-dir DIR [--rounds N] [--volumes LIST] [--smoke]
#
# The dataset: --smoke 8 MiB in 64 files, otherwise 512 MiB in 128 files of incompressible data
# (the archive is then about the dataset's size, so the S3 figure is the store's write speed;
# the OSD keeps objects in 2 GiB of memory, which holds one archive and the one replacing it).
# Takeover (bkp_takeover_bench, bench/takeover_volumes.cc): for each N of LIST (default 1,4,16;
# --smoke 2), each round two fresh backupd with 3 s leases and N backupfs mounts of 4 MiB each
# (8 files of 512 KiB; --smoke 4 of 16 KiB), half the volumes (rounded up) on the server killed;
# the time from its kill -9 until the other serves all of them, and until their mirrors there
# equal their sources (a file was written on each meanwhile), and the difference per round (what
# the volumes' baselines cost once served: the first time is mostly the lease's expiry and its
# phase against the survivor's rounds). ServerTakeoverTest times 1 volume.
# Needs DIR/tests/bkp_scale_bench and bkp_takeover_bench (-DBKP_BUILD_TESTS=ON), root (FUSE)
# and the packages of `scripts/setup.sh --scale-out`.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
BUILD=
ROUNDS=3
SMOKE=
VOLUMES=1,4,16
while (($#)); do
  case $1 in
    --build-dir) BUILD=$(realpath "${2:?--build-dir needs a directory}"); shift 2 ;;
    --rounds) ROUNDS=${2:?--rounds needs a number}; shift 2 ;;
    --volumes) VOLUMES=${2:?--volumes needs a list like 1,4,16}; shift 2 ;;
    --smoke) SMOKE=1; ROUNDS=1; VOLUMES=2; shift ;;
    *) echo "scale_out.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $BUILD ]] || { echo "scale_out.sh: --build-dir is required" >&2; exit 2; }
BENCH=$BUILD/tests/bkp_scale_bench
TAKEOVER=$BUILD/tests/bkp_takeover_bench
for b in "$BENCH" "$TAKEOVER"; do
  [[ -x $b ]] || { echo "scale_out.sh: $b not built" >&2; exit 2; }
done

WORK=$(mktemp -d /var/tmp/bkp-scale-out.XXXXXX)
chmod 755 "$WORK"  # PostgreSQL runs as its own user (tests/scale/postgres.sh)
cleanup() {
  bash "$REPO/tests/scale/postgres.sh" stop "$WORK/postgres" >/dev/null 2>&1 || true
  bash "$REPO/tests/scale/ceph.sh" stop "$WORK/ceph" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { printf '[scale-out] %s\n' "$*" >&2; }

log "starting PostgreSQL and Ceph in $WORK"
bash tests/scale/postgres.sh start "$WORK/postgres" >"$WORK/postgres.log" 2>&1 ||
  { cat "$WORK/postgres.log" >&2; exit 1; }
bash tests/scale/ceph.sh start "$WORK/ceph" >"$WORK/ceph.log" 2>&1 || { cat "$WORK/ceph.log" >&2; exit 1; }
PG_URL=$(sed -n 's/^BKP_TEST_POSTGRES_URL=//p' "$WORK/postgres/env")

if [[ -n $SMOKE ]]; then
  FILES=64 FILE_MIB=0.125 OPS=50 VOLUME_FILES=4 VOLUME_FILE_KIB=16
else
  FILES=128 FILE_MIB=4 OPS=2000 VOLUME_FILES=8 VOLUME_FILE_KIB=512
fi
log "dataset: $FILES files of $FILE_MIB MiB"
mkdir -p "$WORK/tree"
/usr/bin/python3 - "$WORK/tree" "$FILES" "$FILE_MIB" <<'PY'
import os, sys
root, files, mib = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for i in range(files):
    with open(os.path.join(root, "f%04d" % i), "wb") as f:
        f.write(os.urandom(int(mib * 1048576)))
PY

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
value() { awk -v k="$1" '$1 == k { print $2 }'; }
: >"$WORK/ratios.snap" >"$WORK/ratios.cat" >"$WORK/local" >"$WORK/s3" >"$WORK/sqlite" >"$WORK/pg"
for ((round = 1; round <= ROUNDS; round++)); do
  log "round $round of $ROUNDS"
  rm -rf "$WORK/snap" && mkdir -p "$WORK/snap"
  out=$("$BENCH" snapshot "$WORK/tree" "$WORK/snap" "$WORK/ceph/env")
  local_s=$(value snapshot_local_s <<<"$out")
  s3_s=$(value snapshot_s3_s <<<"$out")
  echo "$local_s" >>"$WORK/local"
  echo "$s3_s" >>"$WORK/s3"
  awk -v a="$local_s" -v b="$s3_s" 'BEGIN { print a / b }' >>"$WORK/ratios.snap"
  # A new catalog each round on either engine.
  rm -f "$WORK/catalog.db"*
  sqlite=$("$BENCH" catalog "$WORK/catalog.db" "$OPS" | value catalog_ops_per_s)
  psql -q "$PG_URL" -c "CREATE DATABASE round$round" >/dev/null
  pg=$("$BENCH" catalog "${PG_URL%/postgres}/round$round" "$OPS" | value catalog_ops_per_s)
  echo "$sqlite" >>"$WORK/sqlite"
  echo "$pg" >>"$WORK/pg"
  awk -v a="$pg" -v b="$sqlite" 'BEGIN { print a / b }' >>"$WORK/ratios.cat"
done
# Takeover: every round its own database, servers and mounts under $WORK.
for n in ${VOLUMES//,/ }; do
  : >"$WORK/served.$n" >"$WORK/mirrors.$n" >"$WORK/after.$n"
  for ((round = 1; round <= ROUNDS; round++)); do
    log "takeover of $n volumes, round $round of $ROUNDS"
    out=$(BKP_TEST_TMPDIR=$WORK "$TAKEOVER" --catalog-server "$PG_URL" --volumes "$n" \
      --files "$VOLUME_FILES" --file-kib "$VOLUME_FILE_KIB" --lease-seconds 3)
    served=$(value takeover_served_ms <<<"$out")
    mirrors=$(value takeover_mirrors_ms <<<"$out")
    echo "$served" >>"$WORK/served.$n"
    echo "$mirrors" >>"$WORK/mirrors.$n"
    echo $((mirrors - served)) >>"$WORK/after.$n"
    value volumes_moved <<<"$out" >"$WORK/moved.$n"
    log "  $(tr '\n' ' ' <<<"$out")"
  done
done

bytes=$(du -sb "$WORK/tree" | cut -f1)
printf '%-44s %12s\n' "figure (median of $ROUNDS)" value
printf '%-44s %12.2f\n' "snapshot to local disk, s" "$(median <"$WORK/local")"
printf '%-44s %12.2f\n' "snapshot to S3 (radosgw), s" "$(median <"$WORK/s3")"
printf '%-44s %12.2f\n' "S3 speed / local speed (ratio per round)" "$(median <"$WORK/ratios.snap")"
printf '%-44s %12.0f\n' "dataset, MiB" "$(awk -v b="$bytes" 'BEGIN { print b / 1048576 }')"
printf '%-44s %12.0f\n' "catalog calls/s, SQLite" "$(median <"$WORK/sqlite")"
printf '%-44s %12.0f\n' "catalog calls/s, PostgreSQL" "$(median <"$WORK/pg")"
printf '%-44s %12.2f\n' "PostgreSQL / SQLite (ratio per round)" "$(median <"$WORK/ratios.cat")"
for n in ${VOLUMES//,/ }; do
  label="takeover N=$n, $(cat "$WORK/moved.$n") moved"
  printf '%-44s %12.0f\n' "$label: all served, ms" "$(median <"$WORK/served.$n")"
  printf '%-44s %12.0f\n' "$label: mirrors equal, ms" "$(median <"$WORK/mirrors.$n")"
  printf '%-44s %12.0f\n' "$label: mirrors - served, ms" "$(median <"$WORK/after.$n")"
done
