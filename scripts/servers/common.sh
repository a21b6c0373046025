# Shared by the server scripts: where state lives, the ports (the one table of them,
# scripts/servers/ports), and how a server is waited for and stopped.
. "$(dirname "${BASH_SOURCE[0]}")/ports"
STATE=${LIFEBOAT_TEST_STATE:-/var/tmp/lifeboat-test/state}
TOOLS=${LIFEBOAT_TOOLS:-$HOME/.cache/lifeboat-tools}
mkdir -p "$STATE" "$TOOLS"

# wait_port PORT NAME LOG: wait up to 60 s for 127.0.0.1:PORT to accept connections.
wait_port() {
  local port=$1 name=$2 log=$3
  for _ in $(seq 1 120); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  echo "$name did not start on 127.0.0.1:$port; last lines of $log:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

# wait_up CHECK...: wait up to 60 s until CHECK succeeds while the process in $PIDFILE (the one
# this script started) is still running; fail (log tail, exit 1) when it exits. Uses the calling
# script's NAME, PORT, PIDFILE and LOG.
wait_up() {
  local pid; pid=$(cat "$PIDFILE")
  for _ in $(seq 1 120); do
    # The check alone is not enough: another process may hold the port while ours failed to bind.
    if "$@"; then sleep 0.5; kill -0 "$pid" 2>/dev/null && return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PIDFILE"
      echo "$NAME exited while starting; last lines of $LOG:" >&2; tail -n 20 "$LOG" >&2; exit 1
    fi
    sleep 0.5
  done
  echo "$NAME did not answer on 127.0.0.1:$PORT within 60 s; last lines of $LOG:" >&2
  tail -n 20 "$LOG" >&2; exit 1
}

# alive PIDFILE: true when the pid in PIDFILE is a running process.
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid PIDFILE NAME: stop the process we started, by its pid only.
stop_pid() {
  local pidfile=$1 name=$2
  if alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

apt_install() {
  # apt_install PKG...: install the Debian packages that are missing.
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ ! -f /var/lib/apt/lists/lifeboat-updated ]; then
    apt-get update -qq && touch /var/lib/apt/lists/lifeboat-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
