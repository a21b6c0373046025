#!/usr/bin/env bash
# A second S3 implementation for the MinIO store's tests: s3s-fs (the s3s project's file-system
# server, from crates.io) at http://127.0.0.1:$S3S_PORT, data in $STATE/s3s-fs/data, the same test
# credentials as scripts/servers/s3.sh. It has no versioning (ListObjectVersions answers
# NotImplemented), which is what a restore must cope with.
#
# Install: `cargo install s3s-fs --version $S3S_VERSION --features binary` into $TOOLS/s3s-fs
# (about 3 min on 2 cores; its build folder is kept in $TOOLS/s3s-fs-build for reinstalls).
set -euo pipefail
. "$(dirname "$0")/common.sh"
NAME=s3s-fs
S3S_VERSION=0.14.1
PORT=$S3S_PORT
DIR=$STATE/$NAME
PIDFILE=$STATE/$NAME.pid
LOG=$STATE/$NAME.log
BIN=$TOOLS/s3s-fs/bin/s3s-fs
ACCESS_KEY=lifeboat-test-access
SECRET_KEY=lifeboat-test-secret-key

installed() { [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -qF "$S3S_VERSION"; }

# Any HTTP answer (s3s-fs answers an unsigned request with an S3 error) means it is serving.
ready() { curl -sS -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null; }

case "${1:-}" in
  install)
    command -v curl >/dev/null 2>&1 || apt_install curl
    installed && exit 0
    CARGO_TARGET_DIR=$TOOLS/s3s-fs-build cargo install --quiet s3s-fs --version "$S3S_VERSION" --features binary --root "$TOOLS/s3s-fs"
    ;;
  start)
    if alive "$PIDFILE" && ready; then exit 0; fi
    if ! alive "$PIDFILE"; then
      [ -x "$BIN" ] || { echo "$NAME: $BIN missing; run: $0 install" >&2; exit 1; }
      mkdir -p "$DIR/data"
      (umask 077; printf %s "$ACCESS_KEY" >"$STATE/s3-access-key"; printf %s "$SECRET_KEY" >"$STATE/s3-secret-key")
      (
        exec setsid "$BIN" --host 127.0.0.1 --port "$PORT" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" "$DIR/data" \
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
