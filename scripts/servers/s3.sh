#!/usr/bin/env bash
# S3 test server for tests and the quick start: the real MinIO server, single drive, at
# http://127.0.0.1:$MINIO_PORT (scripts/servers/ports; path-style addressing, region us-east-1),
# data in $STATE/s3/data.
# Fixed test credentials, also written to $STATE/s3-access-key and $STATE/s3-secret-key.
# The web console is off; certs dir, config and temp files stay under $STATE/s3. MinIO always
# also listens on the other loopback address, [::1]:$MINIO_PORT (built in; nothing non-loopback).
#
# Install: `go install github.com/minio/minio@$MINIO_VERSION` from the Go module proxy. MinIO's
# RELEASE.* tags are not semver, so the proxy lists no versions and refuses the tag names; the
# exact pseudo-version below is what the proxy resolved `latest` to (a commit of 2026-02-12).
# The binary reports "DEVELOPMENT.GOGET" as its version, so the installed version is recorded in
# $TOOLS/bin/minio.version. Build takes ~3-6 min on 2 cores and ~150 MB of disk for the binary.
set -euo pipefail
. "$(dirname "$0")/common.sh"
NAME=s3
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
PORT=$MINIO_PORT
DIR=$STATE/$NAME
PIDFILE=$STATE/$NAME.pid
LOG=$STATE/$NAME.log
BIN=$TOOLS/bin/minio
ACCESS_KEY=lifeboat-test-access
SECRET_KEY=lifeboat-test-secret-key

find_go() {
  if command -v go >/dev/null 2>&1; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  else echo "s3: no Go toolchain (MinIO needs go 1.24 or newer)" >&2; return 1
  fi
}

installed() { [ -x "$BIN" ] && [ "$(cat "$BIN.version" 2>/dev/null)" = "$MINIO_VERSION" ]; }

ready() { curl -fsS -o /dev/null "http://127.0.0.1:$PORT/minio/health/ready" 2>/dev/null; }

case "${1:-}" in
  install)
    command -v curl >/dev/null 2>&1 || apt_install curl
    installed && exit 0
    GO=$(find_go)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && GOBIN=$TOOLS/bin "$GO" install "github.com/minio/minio@$MINIO_VERSION")
    echo "$MINIO_VERSION" >"$BIN.version"
    ;;
  start)
    if alive "$PIDFILE" && ready; then exit 0; fi
    if ! alive "$PIDFILE"; then
      [ -x "$BIN" ] || { echo "s3: $BIN missing; run: $0 install" >&2; exit 1; }
      mkdir -p "$DIR/data" "$DIR/certs" "$DIR/tmp"
      (umask 077; printf %s "$ACCESS_KEY" >"$STATE/s3-access-key"; printf %s "$SECRET_KEY" >"$STATE/s3-secret-key")
      (
        cd "$DIR"
        export MINIO_ROOT_USER=$ACCESS_KEY MINIO_ROOT_PASSWORD=$SECRET_KEY MINIO_BROWSER=off \
          MINIO_UPDATE=off MINIO_REGION=us-east-1 MINIO_CI_CD=1 HOME=$DIR TMPDIR=$DIR/tmp
        exec setsid "$BIN" server --quiet --address "127.0.0.1:$PORT" \
          --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" --certs-dir "$DIR/certs" "$DIR/data" \
          >>"$LOG" 2>&1 </dev/null
      ) &
      echo $! >"$PIDFILE"
    fi
    wait_up ready
    ;;
  stop)
    stop_pid "$PIDFILE" "$NAME"
    ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
