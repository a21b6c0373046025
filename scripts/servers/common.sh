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

# in_sessions UID SID...: the pids of UID's processes in any of these sessions.
in_sessions() {
  local uid=$1; shift
  local sids=" $* " pid sid owner
  ps -e -o pid=,sid=,uid= | while read -r pid sid owner; do
    if [ "$owner" = "$uid" ] && [[ $sids == *" $sid "* ]]; then echo "$pid"; fi
  done
}

# stop_cluster PIDFILE NAME SIGNAL: stop the PostgreSQL cluster we started, its postmaster's pid in
# PIDFILE, with SIGNAL (TERM a smart, INT a fast shutdown), and then whatever is left of it.
# The postmaster leads a session of its own (pg_ctl starts it so), and so does each child it
# forks; what a child runs stays in that child's session: the archiver's archive_command
# (pgBackRest's archive-push, which retries for a minute a backup server a test has already
# stopped), a backend's COPY TO PROGRAM. So the sessions of the postmaster and of its children,
# taken before the stop, hold every process of the cluster, however deep, even once their leader
# is gone. The postmaster gets 30 s, the rest 5 s more to end by themselves; then what is left in
# those sessions (and owned by the cluster's user, in case a session id was reused) is stopped by
# pid: TERM, then KILL.
stop_cluster() {
  local pidfile=$1 name=$2 signal=$3
  if alive "$pidfile"; then
    local pid uid sessions left
    pid=$(cat "$pidfile")
    uid=$(stat -c %u "/proc/$pid")
    sessions="$pid $(pgrep -P "$pid" | tr '\n' ' ' || true)"
    kill -"$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 10); do
      left=$(in_sessions "$uid" $sessions)
      [ -z "$left" ] && break
      sleep 0.5
    done
    if [ -n "$left" ]; then
      echo "$name: stopping what is left of the cluster: $(echo $left)"
      # shellcheck disable=SC2086
      kill $left 2>/dev/null || true
      sleep 2
      left=$(in_sessions "$uid" $sessions)
      # shellcheck disable=SC2086
      [ -z "$left" ] || kill -9 $left 2>/dev/null || true
    fi
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
