#!/usr/bin/env bash
# Installs the build into a scratch prefix with `cmake --install` and checks every installed unit
# (the template through an instance, as systemd would load it):
#   - `systemd-analyze verify`: it only warns on typos and unknown keys, so any output at all is a
#     failure;
#   - `systemd-analyze security --offline=yes`: the overall exposure must equal the one README.md
#     records for the unit (the table under "How far the units are locked down"). A higher score
#     is a lost protection; a lower one means README must say so.
# usage: verify_units.sh BUILD_DIR
set -euo pipefail
build=$1
readme=$(dirname "$0")/../../README.md
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
prefix=$scratch/usr
cmake --install "$build" --prefix "$prefix" >/dev/null
units=$prefix/lib/systemd/system
ln -s "$units/backupfs@.service" "$units/backupfs@srv-app.service"
status=0

# The score README.md records for UNIT (a template by its own name): the row "| `UNIT` | N.N |".
recorded_score() {
  awk -F'|' -v unit="\`$1\`" '{ gsub(/ /, "", $2); gsub(/ /, "", $3) } $2 == unit { print $3 }' \
    "$readme"
}

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

  template=${unit/@*./@.}
  want=$(recorded_score "$template")
  report=$(systemd-analyze security --offline=yes "$units/$unit" 2>&1) || true
  got=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$report")
  if [[ -z $want ]]; then
    echo "FAIL $template: README.md records no security score for it"
    status=1
  elif [[ -z $got ]]; then
    echo "FAIL $unit: no overall exposure from systemd-analyze security:"
    echo "$report"
    status=1
  elif [[ $got != "$want" ]]; then
    echo "FAIL $unit: exposure $got, README.md records $want ($(systemd-analyze --version | head -n 1)):"
    grep '✗' <<<"$report" || true
    status=1
  else
    echo "ok   $unit exposure $got"
  fi
done
for f in "$prefix/lib/sysusers.d/backupfs.conf" "$prefix/etc/backupfs/backupd.toml" \
         "$prefix/bin/backupd" "$prefix/bin/backupfs" "$prefix/bin/replicator"; do
  [[ -e $f ]] || { echo "FAIL not installed: $f"; status=1; }
done
exit $status
