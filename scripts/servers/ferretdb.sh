#!/usr/bin/env bash
# FerretDB 1.24.2 (MongoDB wire protocol) for tests and the quick start: mongodb://127.0.0.1:$MONGO_PORT,
# no auth, storing in the PostgreSQL test server (scripts/servers/postgres.sh, 127.0.0.1:$PG_PORT,
# user postgres, trust auth) in its database `ferretdb`, which `start` creates when missing.
#   LIFEBOAT_FERRETDB_BACKEND=sqlite   store in SQLite files under $STATE/ferretdb/sqlite instead
#   LIFEBOAT_PG_PORT=N                 PostgreSQL port (default $PG_PORT, as postgres.sh)
#   LIFEBOAT_FERRETDB_PG_URL=URL       full PostgreSQL URL (overrides the port)
#
# Install: from the Go module proxy inside a throwaway module, as ../shared/SPEC.md says. The module
# zip of FerretDB v1.24.2 lacks the generated build/version/version.txt, and a binary built from it
# panics at start ("Invalid build/version/version.txt file content"). So the throwaway module is
# vendored (`go mod vendor`), version.txt ("v1.24.2") is written into the vendored copy, and the
# binary is built with -mod=vendor. Nothing else of FerretDB's source is changed.
# Telemetry is off, the debug HTTP listener is off, state.json goes to $STATE/ferretdb.
#
# What FerretDB 1.24.2 (PostgreSQL backend; SQLite the same where tried) lacks, seen with pymongo:
# - Decimal128, MinKey, MaxKey, JavaScript code, NaN: inserting one drops the connection (server
#   logs "invalid BSON type"); -0.0 comes back as 0.0; field names with '.' are refused.
# - create options: capped (size, max) work and show in listCollections; validator, collation,
#   timeseries answer NotImplemented.
# - indexes: single/compound/nested-field/descending and unique (enforced, E11000) work and show
#   in listIndexes; sparse is accepted but silently dropped (not in listIndexes); TTL
#   (expireAfterSeconds), partialFilterExpression, collation, hidden answer NotImplemented;
#   text, hashed and 2dsphere fail with "can't find index with key". A unique index over
#   duplicate values is refused (with an internal-looking error text).
# - Fine: nested docs, arrays, ObjectId, dates, binary (incl. UUID subtype 4), int32/int64,
#   timestamps, regex, 15 MB documents, string/int/document _id, collection names with dots,
#   renameCollection, count/estimatedDocumentCount, collStats/dbStats, drop database.
set -euo pipefail
. "$(dirname "$0")/common.sh"
NAME=ferretdb
VERSION=v1.24.2
PORT=$MONGO_PORT
DIR=$STATE/$NAME
PIDFILE=$STATE/$NAME.pid
LOG=$STATE/$NAME.log
BIN=$TOOLS/bin/ferretdb
BACKEND=${LIFEBOAT_FERRETDB_BACKEND:-postgresql}
PG_PORT=${LIFEBOAT_PG_PORT:-$PG_PORT}
PG_URL=${LIFEBOAT_FERRETDB_PG_URL:-postgres://postgres@127.0.0.1:$PG_PORT/ferretdb}

find_go() {
  if command -v go >/dev/null 2>&1; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else echo "ferretdb: no Go toolchain (go 1.24 or newer is needed for 'go get -tool')" >&2; return 1
  fi
}

installed() { [ -x "$BIN" ] && [[ $'\n'$("$BIN" --version 2>/dev/null)$'\n' == *$'\n'"version: $VERSION"$'\n'* ]]; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# ensure_pg_db: the backing database exists (PostgreSQL backend only).
ensure_pg_db() {
  local db=${PG_URL##*/}; db=${db%%\?*}
  local base=${PG_URL%/*}/postgres
  local have
  have=$(psql "$base" -v ON_ERROR_STOP=1 -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'") || {
    echo "ferretdb: PostgreSQL at ${PG_URL%/*} does not answer; start it first (postgres.sh start)" >&2
    exit 1
  }
  [ "$have" = 1 ] || psql "$base" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$db\"" >/dev/null
}

case "${1:-}" in
  install)
    command -v psql >/dev/null 2>&1 || apt_install postgresql-client-15
    installed && exit 0
    GO=$(find_go)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (
      cd "$tmp"
      "$GO" mod init x >/dev/null 2>&1
      "$GO" get -tool "github.com/FerretDB/FerretDB/cmd/ferretdb@$VERSION"
      "$GO" mod vendor
      echo "$VERSION" > vendor/github.com/FerretDB/FerretDB/build/version/version.txt
      GOBIN=$TOOLS/bin GOFLAGS=-buildvcs=false "$GO" install -mod=vendor github.com/FerretDB/FerretDB/cmd/ferretdb
    )
    installed || { echo "ferretdb: $BIN was not built as $VERSION" >&2; exit 1; }
    ;;
  start)
    if alive "$PIDFILE" && port_open; then exit 0; fi
    if ! alive "$PIDFILE"; then
      [ -x "$BIN" ] || { echo "ferretdb: $BIN missing; run: $0 install" >&2; exit 1; }
      mkdir -p "$DIR"
      args=(--listen-addr="127.0.0.1:$PORT" --state-dir="$DIR" --telemetry=disable
            --debug-addr=- --log-level=INFO --log-format=text)
      case "$BACKEND" in
        postgresql) ensure_pg_db; args+=(--handler=postgresql --postgresql-url="$PG_URL") ;;
        sqlite) mkdir -p "$DIR/sqlite"; args+=(--handler=sqlite --sqlite-url="file:$DIR/sqlite/") ;;
        *) echo "ferretdb: unknown backend $BACKEND (postgresql or sqlite)" >&2; exit 2 ;;
      esac
      (cd "$DIR" && exec setsid "$BIN" "${args[@]}" >>"$LOG" 2>&1 </dev/null) &
      echo $! >"$PIDFILE"
    fi
    wait_up port_open
    ;;
  stop)
    stop_pid "$PIDFILE" "$NAME"
    ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
