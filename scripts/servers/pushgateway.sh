#!/usr/bin/env bash
# The Prometheus Pushgateway (Debian 12's prometheus-pushgateway, unpacked into $TOOLS, never
# installed) at http://127.0.0.1:$PUSHGATEWAY_PORT, for the metrics tests. No persistence: it starts empty.
set -euo pipefail
. "$(dirname "$0")/common.sh"
NAME=pushgateway
VERSION=1.5.1-2+b5
PORT=$PUSHGATEWAY_PORT
PIDFILE=$STATE/$NAME.pid
LOG=$STATE/$NAME.log
DIR=$TOOLS/pushgateway-$VERSION
BIN=$DIR/usr/bin/prometheus-pushgateway

ready() { curl -fsS -o /dev/null "http://127.0.0.1:$PORT/-/ready" 2>/dev/null; }

case "${1:-}" in
  install)
    command -v curl >/dev/null 2>&1 || apt_install curl
    [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1 && exit 0
    download=$(mktemp -d); chown _apt "$download" 2>/dev/null || true
    apt-cache madison prometheus-pushgateway | grep -qF " $VERSION " || apt-get update -qq
    (cd "$download" && apt-get download -qq "prometheus-pushgateway=$VERSION")
    rm -rf "$DIR.partial" && dpkg -x "$download"/prometheus-pushgateway_*.deb "$DIR.partial" && rm -rf "$download"
    "$DIR.partial/usr/bin/prometheus-pushgateway" --version >/dev/null 2>&1
    rm -rf "$DIR" && mv "$DIR.partial" "$DIR"
    ;;
  start)
    if alive "$PIDFILE" && ready; then exit 0; fi
    if ! alive "$PIDFILE"; then
      [ -x "$BIN" ] || { echo "$NAME: $BIN missing; run: $0 install" >&2; exit 1; }
      (exec setsid "$BIN" --web.listen-address "127.0.0.1:$PORT" >>"$LOG" 2>&1 </dev/null) &
      echo $! >"$PIDFILE"
    fi
    wait_up ready
    ;;
  stop)
    stop_pid "$PIDFILE" "$NAME"
    ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
