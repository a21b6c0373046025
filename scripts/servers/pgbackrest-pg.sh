#!/usr/bin/env bash
# A PostgreSQL 15 of its own for the pgBackRest (`differential`) tests: 127.0.0.1:$PGBR_PG_PORT
# (scripts/servers/ports), user postgres, trust auth, archive_mode=on with every WAL segment pushed
# by pgBackRest. The shared test PostgreSQL ($PG_PORT) is never restored over or restarted by these
# tests.
#
# archive_command reads the pgBackRest configuration Lifeboat renders into $CONF (the tests'
# stores.postgres.pgbackrest_dir), with stanza `lifeboat_test`. Until a test has rendered it,
# archiving fails and PostgreSQL keeps the WAL and retries: nothing is lost.
# The server runs as the `postgres` OS user, which cannot enter root's home: pgBackRest (installed
# by scripts/install-deps under $TOOLS) is copied to $STATE/pgbackrest-bin for it.
set -euo pipefail
. "$(dirname "$0")/common.sh"
NAME=pgbackrest-pg
PORT=${LIFEBOAT_PGBR_PG_PORT:-$PGBR_PG_PORT}
DIR=$STATE/pgbackrest-pg
CONF=$STATE/pgbackrest-pg-lifeboat
BIN_DIR=$STATE/pgbackrest-bin
PIDFILE=$STATE/pgbackrest-pg.pid
LOG=$STATE/pgbackrest-pg.log
PG_BIN=/usr/lib/postgresql/15/bin
PGBACKREST=$TOOLS/pgbackrest-2.55.1-1/usr/bin/pgbackrest

ready() { psql -X -q -A -t -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c 'SELECT 1' 2>/dev/null | grep -qx 1; }

case "${1:-}" in
  install)
    "$(dirname "$0")/../install-deps"
    ;;
  start)
    if alive "$PIDFILE"; then exit 0; fi
    [ -x "$PGBACKREST" ] || { echo "$PGBACKREST is missing: run scripts/install-deps" >&2; exit 1; }
    chmod 755 "$STATE" "$(dirname "$STATE")" 2>/dev/null || true
    mkdir -p "$BIN_DIR" && install -m 755 "$PGBACKREST" "$BIN_DIR/pgbackrest"
    mkdir -p "$CONF" && chown postgres: "$CONF" && chmod 700 "$CONF"
    if [ ! -f "$DIR/PG_VERSION" ]; then
      mkdir -p "$DIR" && chown postgres: "$DIR" && chmod 700 "$DIR"
      su postgres -c "$PG_BIN/initdb -D '$DIR' -U postgres --auth=trust -E UTF8 --locale=C.UTF-8" >"$LOG" 2>&1
      echo "include_if_exists = 'lifeboat-test.conf'" >> "$DIR/postgresql.conf"
    fi
    # Rewritten on every start, so a changed script takes effect on an existing cluster.
    cat > "$DIR/lifeboat-test.conf" <<CONFIG
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
fsync = off
wal_level = replica
archive_mode = on
archive_command = '$BIN_DIR/pgbackrest --config=$CONF/pgbackrest.conf --stanza=lifeboat_test archive-push %p'
CONFIG
    chown postgres: "$DIR/lifeboat-test.conf"
    touch "$LOG" && chown postgres: "$LOG"
    su postgres -c "$PG_BIN/pg_ctl -D '$DIR' -l '$LOG' -w -t 60 start" >/dev/null
    head -1 "$DIR/postmaster.pid" > "$PIDFILE"
    wait_up ready
    ;;
  stop)
    # A fast shutdown (SIGINT). Its archiver may still be pushing WAL to a backup server a test
    # has already stopped (pgBackRest retries for a minute per file). Left behind, the archiver
    # would hold the cluster's shared memory (the next start fails) and its archive-push would run
    # on after the suite. So every process of the cluster still there once the postmaster is gone
    # (or after 30 s) is stopped too, by its pid (stop_cluster in common.sh).
    stop_cluster "$PIDFILE" "$NAME" INT
    ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
