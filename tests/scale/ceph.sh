#!/usr/bin/env bash
# A throwaway one-node Ceph (16, pacific) with radosgw, for testing backupd's S3 store against a
# real S3 implementation rather than a mock that agrees with our own reading of the protocol.
#
#   ceph.sh start DIR   mon + one memstore OSD + radosgw on 127.0.0.1, an S3 user; DIR/env
#   ceph.sh stop DIR    stops the daemons started in DIR (by their pid files)
#
# Everything lives under DIR: ceph.conf, mon and OSD data, pid files, admin sockets, logs. Two
# clusters in two DIRs do not collide (own fsid, own free ports). The OSD keeps objects in memory
# (memstore, bounded at 2 GiB), so start-up is a few seconds and nothing is written but logs.
# Authentication is off: the cluster listens on 127.0.0.1 only and lives for one test run; S3
# requests are still signed and checked by radosgw with the user's keys. There is no mgr (radosgw
# does not need one); nothing waits on health.
#
# DIR/env, for the tests (sourceable shell):
#   S3_ENDPOINT=http://127.0.0.1:PORT  S3_ACCESS_KEY=...  S3_SECRET_KEY=...  S3_REGION=default
set -euo pipefail

die() { echo "ceph.sh: $*" >&2; exit 1; }

# A port free on 127.0.0.1 now (the kernel picks it); the daemon binds it a moment later.
free_port() {
  /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 0.1 s until it succeeds; fails naming WHAT
# (and the log to read) when SECONDS pass.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what not ready after ${seconds}s (logs in $dir/log)"
    sleep 0.1
  done
}

cephc() { ceph -c "$dir/ceph.conf" --connect-timeout 10 "$@"; }
osd_up() { cephc osd dump | grep -q '^osd.0 up'; }

write_conf() {
  local fsid=$1 mon_port=$2 rgw_port=$3
  cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
public addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
run dir = $dir/run
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
mon cluster log file = $dir/log/cluster.log
crash dir = $dir/crash
mon data = $dir/mon/\$id
osd data = $dir/osd/\$id
# One OSD, pools of size 1: no replication, and no warnings about it.
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
osd crush chooseleaf type = 0
# radosgw creates about eight pools at start; keep them small so the PG limit is never hit.
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
# A scratch disk may be fuller than the mon's default 5% floor.
mon data avail crit = 0
# radosgw creates its pools one by one at start, each a new OSD map: commit maps at once rather
# than batching them for a second each.
paxos propose interval = 0.01
osd objectstore = memstore
memstore device bytes = 2147483648

[client]
# radosgw asks for an encrypted mon session by default, which needs cephx.
ms mon client mode = crc
admin socket = $dir/run/\$name.\$pid.asok
log file = $dir/log/\$name.log

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
# No garbage collection, lifecycle or quota threads: nothing here needs them, and radosgw waits
# for their sleeps to end when asked to stop.
rgw enable gc threads = false
rgw enable lc threads = false
rgw enable quota threads = false
EOF
}

start() {
  local pid_file
  for pid_file in "$dir"/run/*.pid; do
    [[ -f $pid_file ]] && kill -0 "$(<"$pid_file")" 2>/dev/null &&
      die "$dir holds a running cluster ($pid_file); stop it first"
  done
  # What a previous, stopped cluster left here (a test fixture reuses its directory).
  rm -rf "$dir"/{ceph.conf,monmap,env,env.tmp,run,log,crash,mon,osd,rgw}
  mkdir -p "$dir"/{run,log,crash,mon/a,osd/0,rgw}
  local fsid mon_port rgw_port osd_uuid
  fsid=$(uuidgen)
  mon_port=$(free_port)
  rgw_port=$(free_port)
  [[ $mon_port != "$rgw_port" ]] || rgw_port=$(free_port)
  write_conf "$fsid" "$mon_port" "$rgw_port"

  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
  # Whatever fails from here on, the daemons already started are stopped again.
  trap '[[ -f $dir/env ]] || stop' EXIT
  ceph-mon -c "$dir/ceph.conf" -i a --mkfs --monmap "$dir/monmap"
  ceph-mon -c "$dir/ceph.conf" -i a || die "ceph-mon did not start (see $dir/log/mon.a.log)"
  wait_for 30 "mon" cephc mon stat

  osd_uuid=$(uuidgen)
  cephc osd new "$osd_uuid" 0 >/dev/null
  ceph-osd -c "$dir/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>>"$dir/log/osd-mkfs.log"
  ceph-osd -c "$dir/ceph.conf" -i 0 2>>"$dir/log/osd-start.log" ||
    die "ceph-osd did not start (see $dir/log/osd.0.log)"
  wait_for 30 "osd.0" osd_up

  radosgw -c "$dir/ceph.conf" -n client.rgw ||
    die "radosgw did not start (see $dir/log/client.rgw.log)"
  wait_for 60 "radosgw" curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$rgw_port/"

  local access secret
  access=$(openssl rand -hex 10 | tr a-f A-F)
  secret=$(openssl rand -hex 20)
  radosgw-admin -c "$dir/ceph.conf" -n client.admin user create --uid=bkp-test \
    --display-name="backupfs tests" --access-key="$access" --secret-key="$secret" >/dev/null
  cat >"$dir/env.tmp" <<EOF
S3_ENDPOINT=http://127.0.0.1:$rgw_port
S3_ACCESS_KEY=$access
S3_SECRET_KEY=$secret
S3_REGION=default
EOF
  chmod 600 "$dir/env.tmp"
  mv "$dir/env.tmp" "$dir/env"
}

# terminate NAME: TERM to the daemon of DIR named NAME (by its pid file), KILL if it is still
# there after 10 s.
terminate() {
  local pid_file=$dir/run/$1.pid pid
  [[ -f $pid_file ]] || return 0
  pid=$(<"$pid_file")
  rm -f "$pid_file"
  [[ $pid =~ ^[0-9]+$ ]] && kill -TERM "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# One at a time, clients first: radosgw stopping while the OSD goes away waits out its RADOS
# timeouts, and an OSD stopping without a mon to tell waits 5 s for one.
stop() {
  terminate client.rgw
  terminate osd.0
  terminate mon.a
}

[[ $# -eq 2 ]] || die "usage: ceph.sh start|stop DIR"
mkdir -p "$2"
dir=$(cd "$2" && pwd)
case $1 in
  start) start ;;
  stop) stop ;;
  *) die "usage: ceph.sh start|stop DIR" ;;
esac
