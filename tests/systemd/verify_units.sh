#!/usr/bin/env bash
# Installs the build into a scratch prefix with `cmake --install` and runs `systemd-analyze
# verify` on every installed unit (the template through an instance, as systemd would load it).
# systemd-analyze only warns on typos and unknown keys, so any output at all is a failure.
# usage: verify_units.sh BUILD_DIR
set -euo pipefail
build=$1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
prefix=$scratch/usr
cmake --install "$build" --prefix "$prefix" >/dev/null
units=$prefix/lib/systemd/system
ln -s "$units/backupfs@.service" "$units/backupfs@srv-app.service"
status=0
for unit in backupd.service replicator.service backupfs@srv-app.service; do
  if [[ ! -e $units/$unit ]]; then
    echo "FAIL $unit: not installed"
    status=1
    continue
  fi
  out=$(systemd-analyze verify "$units/$unit" 2>&1) || true
  if [[ -n $out ]]; then
    echo "FAIL $unit:"
    echo "$out"
    status=1
  else
    echo "ok   $unit"
  fi
done
for f in "$prefix/lib/sysusers.d/backupfs.conf" "$prefix/etc/backupfs/backupd.toml" \
         "$prefix/bin/backupd" "$prefix/bin/backupfs" "$prefix/bin/replicator"; do
  [[ -e $f ]] || { echo "FAIL not installed: $f"; status=1; }
done
exit $status
