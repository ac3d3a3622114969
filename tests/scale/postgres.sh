#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests of the catalog on PostgreSQL (server/postgres.h):
#
#   postgres.sh start DIR    initdb into DIR/data, start it on 127.0.0.1 at a free port (its
#                            socket in DIR), write DIR/env: BKP_TEST_POSTGRES_URL=postgresql://...
#   postgres.sh stop DIR     stop that server (the postmaster named by DIR/data/postmaster.pid),
#                            removing DIR/env
#   postgres.sh pause DIR    SIGSTOP the postmaster and its backends: a server that accepts
#   postgres.sh resume DIR   nothing and answers nothing, until resumed
#
# Each start makes a new cluster (DIR/data is removed first), with fsync off: tests want speed,
# not durability. Trust authentication, on loopback only. PostgreSQL refuses to run as root, so
# as root the server runs as the `postgres` user of the Debian package, DIR owned by it.
# Every wait is on a condition with a deadline; stop signals only the PID in DIR's pid file.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
usage() { echo "usage: $0 start|stop|pause|resume DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
cmd=$1
dir=$(realpath -m "$2")
data=$dir/data

as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    (cd "$dir" && runuser -u postgres -- "$@")
  else
    (cd "$dir" && "$@")
  fi
}

postmaster_pid() {
  [[ -f $data/postmaster.pid ]] && head -n 1 "$data/postmaster.pid"
}

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to $1 seconds for the postmaster $2 to be gone.
wait_gone() {
  local deadline=$((SECONDS + $1))
  while kill -0 "$2" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

start() {
  if pid=$(postmaster_pid) && kill -0 "$pid" 2>/dev/null; then
    echo "postgres.sh: a server (pid $pid) already runs in $dir; stop it first" >&2
    exit 1
  fi
  mkdir -p "$dir"
  rm -rf "$data" "$dir/env"
  [[ $(id -u) -eq 0 ]] && chown postgres: "$dir"
  as_owner "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
  # A free port may be taken between the probe and the bind: try a few.
  local port
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    if as_owner "$PG_BIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 30 -o \
        "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null; then
      echo "BKP_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$port/postgres" >"$dir/env"
      cat "$dir/env"
      return 0
    fi
    if pid=$(postmaster_pid) && kill -0 "$pid" 2>/dev/null; then break; fi  # up, yet not ready
  done
  echo "postgres.sh: the server did not start; see $dir/postgres.log" >&2
  tail -n 20 "$dir/postgres.log" >&2 || true
  stop
  exit 1
}

stop() {
  local pid
  rm -f "$dir/env"  # its URL leads nowhere from now on
  pid=$(postmaster_pid) || return 0
  kill -CONT "$pid" 2>/dev/null || return 0  # a paused server could not act on the signal
  pkill -CONT -P "$pid" 2>/dev/null || true
  kill -INT "$pid"  # fast shutdown: roll back, disconnect, checkpoint
  wait_gone 30 "$pid" && return 0
  kill -QUIT "$pid" 2>/dev/null || true  # immediate shutdown
  wait_gone 10 "$pid" || { echo "postgres.sh: postmaster $pid would not stop" >&2; exit 1; }
}

signal_all() {
  local pid
  pid=$(postmaster_pid) || { echo "postgres.sh: no server in $dir" >&2; exit 1; }
  kill "$1" "$pid"
  pkill "$1" -P "$pid" || true
}

case $cmd in
  start) start ;;
  stop) stop ;;
  pause) signal_all -STOP ;;
  resume) signal_all -CONT ;;
  *) usage ;;
esac
