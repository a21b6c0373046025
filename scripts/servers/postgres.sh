#!/usr/bin/env bash
# PostgreSQL 15 for tests and the quick start: 127.0.0.1:$PG_PORT (scripts/servers/ports), user
# postgres, trust auth.
# The server runs as the `postgres` OS user, so its data lives where that user can reach it.
set -euo pipefail
. "$(dirname "$0")/common.sh"
PORT=${LIFEBOAT_PG_PORT:-$PG_PORT}
DIR=$STATE/postgres
PIDFILE=$STATE/postgres.pid
LOG=$STATE/postgres.log
BIN=/usr/lib/postgresql/15/bin

case "${1:-}" in
  install)
    apt_install postgresql-15 postgresql-client-15
    ;;
  start)
    if alive "$PIDFILE"; then exit 0; fi
    chmod 755 "$STATE" "$(dirname "$STATE")" 2>/dev/null || true
    if [ ! -f "$DIR/PG_VERSION" ]; then
      mkdir -p "$DIR" && chown postgres: "$DIR" && chmod 700 "$DIR"
      su postgres -c "$BIN/initdb -D '$DIR' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8" >"$LOG" 2>&1
    fi
    touch "$LOG" && chown postgres: "$LOG"
    su postgres -c "$BIN/pg_ctl -D '$DIR' -l '$LOG' -w -t 60 -o \"-p $PORT -k '$DIR' -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off\" start" >/dev/null
    head -1 "$DIR/postmaster.pid" > "$PIDFILE"
    wait_port "$PORT" postgres "$LOG"
    ;;
  stop)
    stop_cluster "$PIDFILE" postgres TERM
    ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
