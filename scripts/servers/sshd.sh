#!/usr/bin/env bash
# OpenSSH sshd for tests and the quick start: 127.0.0.1:$SSH_PORT (scripts/servers/ports), key auth only, its own host key.
# Writes client_key, known_hosts and wrong_known_hosts (a different host key) under $STATE/sshd.
set -euo pipefail
. "$(dirname "$0")/common.sh"
PORT=${LIFEBOAT_SSH_PORT:-$SSH_PORT}
DIR=$STATE/sshd
PIDFILE=$STATE/sshd.pid
LOG=$STATE/sshd.log

case "${1:-}" in
  install)
    apt_install openssh-server openssh-client
    ;;
  start)
    if alive "$PIDFILE"; then exit 0; fi
    mkdir -p "$DIR" /run/sshd && chmod 700 "$DIR"
    [ -f "$DIR/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/host_key"
    [ -f "$DIR/other_host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/other_host_key"
    [ -f "$DIR/client_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/client_key"
    cp "$DIR/client_key.pub" "$DIR/authorized_keys"
    echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$DIR/host_key.pub")" > "$DIR/known_hosts"
    echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$DIR/other_host_key.pub")" > "$DIR/wrong_known_hosts"
    cat > "$DIR/sshd_config" <<CFG
Port $PORT
ListenAddress 127.0.0.1
HostKey $DIR/host_key
PidFile $PIDFILE
AuthorizedKeysFile $DIR/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
MaxSessions 50
MaxStartups 100:30:200
Subsystem sftp internal-sftp
CFG
    /usr/sbin/sshd -f "$DIR/sshd_config" -E "$LOG"
    wait_port "$PORT" sshd "$LOG"
    ;;
  stop)
    stop_pid "$PIDFILE" sshd
    ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
