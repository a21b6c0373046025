#!/usr/bin/env bash
# Tests of the backup-server playbook deploy/ansible/backup-server.yml, for real, as root:
# --syntax-check and ansible-lint (production profile); two runs against this machine into a test
# user and folder, the second changing nothing; then a private sshd (the system's, with the
# authorized_keys the playbook wrote, each key's forced `lifeboat serve`) and logins proving what
# each key can and cannot do, a Lifeboat backup through the production key (append-only), a verify
# through the restore key (read-only), the refusals in serve's logs, and the cron lines run as the user. Cleans up before and after, so it runs again as it is.
#
# Needs: root, the tools venv (scripts/install-deps: ansible-core, ansible-lint), cron and
# openssh-server (install-deps), the test PostgreSQL (started here when down), and
# LIFEBOAT_BIN, the lifeboat binary under test. Run: LIFEBOAT_BIN=... tests/ansible/test_playbook.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${LIFEBOAT_BIN:?set LIFEBOAT_BIN to the lifeboat binary under test}
export PATH=$HOME/.cache/lifeboat-tools/venv/bin:$PATH ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
unset SSH_AUTH_SOCK
T=/var/tmp/lifeboat-test/ansible
WORK=$T/work        # the test's own files (keys, inventory, sshd), root only
ACCOUNT=lifeboat-test
. "$ROOT/scripts/servers/ports"   # the one table of the suite's ports
PORT=$ANSIBLE_SSH_PORT   # our private sshd
BACKUPS=$T/backups
started=$(date +%s)

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok   [$(( $(date +%s) - started ))s] $*"; }

# Our sshd: the one this run started, or one of an earlier, killed run (by its pid file, and only
# if it runs our config).
stop_our_sshd() {
  local pid=${sshd_pid:-}
  if [ -z "$pid" ] && [ -f "$WORK/sshd.pid" ]; then pid=$(cat "$WORK/sshd.pid"); fi
  if [ -n "$pid" ] && grep -qF "$WORK/sshd_config" "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid"
    if [ -n "${sshd_pid:-}" ]; then wait "$pid" 2>/dev/null || true; fi   # our child: reap it
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  sshd_pid=
}

cleanup() {
  stop_our_sshd
  if getent passwd "$ACCOUNT" >/dev/null; then
    crontab -u "$ACCOUNT" -r 2>/dev/null || true
    userdel -f "$ACCOUNT"   # -f: even if a session of it were still ending
  fi
  if getent group "$ACCOUNT" >/dev/null; then groupdel "$ACCOUNT"; fi
  rm -rf "$T"
}

on_exit() {
  local code=$?
  if [ "$code" -ne 0 ] && [ -f "$WORK/sshd.log" ]; then
    echo "--- last lines of the test sshd's log:" >&2
    tail -n 30 "$WORK/sshd.log" >&2
  fi
  cleanup
  echo "tests/ansible/test_playbook.sh: $( [ "$code" -eq 0 ] && echo passed || echo FAILED ) in $(( $(date +%s) - started )) s"
}

[ "$(id -u)" -eq 0 ] || fail "run as root: the playbook creates a user and the test starts sshd"
command -v ansible-playbook >/dev/null || fail "ansible-playbook is missing: run scripts/install-deps"
command -v crontab >/dev/null || fail "crontab is missing: run scripts/install-deps (package cron)"
cleanup
trap on_exit EXIT
LIFEBOAT_TEST_STATE=${LIFEBOAT_TEST_STATE:-/var/tmp/lifeboat-test/state} bash "$ROOT/scripts/servers/postgres.sh" start >/dev/null

mkdir -p "$T/bin" "$WORK" && chmod 755 "$T" && chmod 700 "$WORK"
for key in production restore staging control; do
  ssh-keygen -q -t ed25519 -N '' -C "$key" -f "$WORK/${key}_key"
done
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$WORK/host_key.pub")" > "$WORK/known_hosts"
"$BIN" keygen > "$WORK/age.key" 2>/dev/null
RECIPIENT=$(sed -n 's/^# public key: //p' "$WORK/age.key")
# The backup side's manifest signing key; the server's prune/verify and the restore trust it.
ssh-keygen -q -t ed25519 -N '' -C lifeboat@production -f "$WORK/signing_key"
SIGNER="lifeboat@production namespaces=\"lifeboat\" $(cat "$WORK/signing_key.pub")"
printf '%s\n' "$SIGNER" > "$WORK/allowed_signers"
[ -n "$RECIPIENT" ] || fail "lifeboat keygen printed no public key"

cat > "$WORK/inventory.yml" <<EOF
lifeboat_backup_servers:
  hosts:
    localhost:
      ansible_connection: local
      # The managed host's own Python, as on a real server (python3-apt for the package module).
      ansible_python_interpreter: /usr/bin/python3
      # No sudo here; root becomes root through su without a password.
      ansible_become_method: su
EOF
cat > "$WORK/vars.yml" <<EOF
lifeboat_server_user: $ACCOUNT
lifeboat_server_home: $T/home
lifeboat_server_base_dir: $BACKUPS
lifeboat_server_config_dir: $T/etc
lifeboat_server_log_dir: $T/log
lifeboat_server_binary_src: $BIN
lifeboat_server_binary_dest: $T/bin/lifeboat
lifeboat_server_recipients: [$RECIPIENT]
lifeboat_server_allowed_signers:
  - '$SIGNER'
lifeboat_server_keys:
  - environment: production
    access: write
    key: "$(cat "$WORK/production_key.pub")"
    from: "127.0.0.1,::1"
    writable_subdirs: [pgrepo]
  - environment: production
    access: read
    key: "$(cat "$WORK/restore_key.pub")"
  - environment: staging
    access: write
    key: "$(cat "$WORK/staging_key.pub")"
    from: "192.0.2.1"
lifeboat_server_environment_config:
  staging:
    retention: { keep_daily: 2, keep_weekly: 0, keep_monthly: 0 }
EOF

# --- static checks
cd "$ROOT/deploy/ansible"
ansible-playbook -i "$WORK/inventory.yml" --syntax-check backup-server.yml >/dev/null || fail "--syntax-check"
pass "ansible-playbook --syntax-check"
lint=$(ansible-lint --strict 2>&1) || { echo "$lint" >&2; fail "ansible-lint"; }
grep -q "Profile 'production' was required, and it passed" <<<"$lint" || { echo "$lint" >&2; fail "ansible-lint did not check the production profile"; }
pass "ansible-lint --strict, production profile"

# --- two runs; the second changes nothing
play() {
  ansible-playbook -i "$WORK/inventory.yml" -e "@$WORK/vars.yml" backup-server.yml > "$WORK/play$1.log" 2>&1 \
    || { cat "$WORK/play$1.log" >&2; fail "playbook run $1"; }
  recap=$(grep -E '^localhost +: ok=[0-9]+ +changed=[0-9]+ +unreachable=0 +failed=0 ' "$WORK/play$1.log") \
    || { cat "$WORK/play$1.log" >&2; fail "playbook run $1: no clean recap"; }
  changed=$(sed -E 's/.* changed=([0-9]+) .*/\1/' <<<"$recap")
}
# A key's writable_subdirs are checked before anything changes: a name with /, locks, or any on a read key.
for bad in "write, writable_subdirs: [a/b]" "write, writable_subdirs: [locks]" "read, writable_subdirs: [postgres]"; do
  printf 'lifeboat_server_keys:\n  - {environment: production, key: "%s", access: %s}\n' "$(cat "$WORK/production_key.pub")" "$bad" > "$WORK/bad.yml"
  if ansible-playbook -i "$WORK/inventory.yml" -e "@$WORK/vars.yml" -e "@$WORK/bad.yml" backup-server.yml > "$WORK/bad.log" 2>&1; then
    fail "the playbook accepted a key with access: $bad"
  fi
  grep -q "writable_subdirs (write keys only) folder names" "$WORK/bad.log" && grep -q "changed=0 " "$WORK/bad.log" \
    || { cat "$WORK/bad.log" >&2; fail "a key with access: $bad failed otherwise"; }
done
getent passwd "$ACCOUNT" >/dev/null && fail "a refused run created the user"
pass "a key's writable_subdirs refused: a/b, locks, any on a read key"
play 1
[ "$changed" -gt 0 ] || fail "the first run changed nothing: $recap"
pass "first run: $recap"
play 2
[ "$changed" -eq 0 ] || { cat "$WORK/play2.log" >&2; fail "the second run changed something: $recap"; }
pass "second run: $recap"
cd "$ROOT"

# --- what the playbook made
expect_stat() { # PATH OWNER:GROUP MODE
  local got; got=$(stat -c '%U:%G %a' "$1") || fail "$1 is missing"
  [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}
expect_stat "$T/home" "$ACCOUNT:$ACCOUNT" 750
expect_stat "$T/home/.ssh" "$ACCOUNT:$ACCOUNT" 700
expect_stat "$T/home/.ssh/authorized_keys" "$ACCOUNT:$ACCOUNT" 600
expect_stat "$BACKUPS" "$ACCOUNT:$ACCOUNT" 750
expect_stat "$BACKUPS/production" "$ACCOUNT:$ACCOUNT" 700
expect_stat "$BACKUPS/staging" "$ACCOUNT:$ACCOUNT" 700
expect_stat "$T/bin/lifeboat" root:root 755
expect_stat "$T/etc" "root:$ACCOUNT" 750
expect_stat "$T/etc/production.yaml" "root:$ACCOUNT" 640
expect_stat "$T/etc/staging.yaml" "root:$ACCOUNT" 640
expect_stat "$T/log" "$ACCOUNT:$ACCOUNT" 750
cmp -s "$BIN" "$T/bin/lifeboat" || fail "the installed binary differs from $BIN"
[ "$(getent passwd "$ACCOUNT" | cut -d: -f6,7)" = "$T/home:/bin/sh" ] || fail "home or shell: $(getent passwd "$ACCOUNT")"
SERVE="umask 0077 && exec $T/bin/lifeboat serve"
grep -qxF "restrict,from=\"127.0.0.1,::1\",command=\"$SERVE --append-only $BACKUPS/production --writable-subdir pgrepo \
--log $T/log/serve-production-write.log\" $(cat "$WORK/production_key.pub")" \
  "$T/home/.ssh/authorized_keys" || fail "authorized_keys: no production line: $(cat "$T/home/.ssh/authorized_keys")"
grep -qxF "restrict,command=\"$SERVE --read-only $BACKUPS/production --log $T/log/serve-production-read.log\" $(cat "$WORK/restore_key.pub")" \
  "$T/home/.ssh/authorized_keys" || fail "authorized_keys: no restore line: $(cat "$T/home/.ssh/authorized_keys")"
[ "$(grep -vc '^#' "$T/home/.ssh/authorized_keys")" -eq 3 ] || fail "authorized_keys: not 3 keys"
grep -qF "url: file://$BACKUPS/staging" "$T/etc/staging.yaml" && grep -qF "keep_daily: 2" "$T/etc/staging.yaml" \
  || fail "staging.yaml lacks its url or its own retention: $(cat "$T/etc/staging.yaml")"
pass "user, folders, modes, binary, authorized_keys and configurations"

# --- a private sshd: the system's, StrictModes on, the user's own authorized_keys. A second file
# holds an unrestricted control key, showing that what the keys are refused, this sshd allows.
install -o "$ACCOUNT" -g "$ACCOUNT" -m 600 "$WORK/control_key.pub" "$T/home/.ssh/control_keys"
cat > "$WORK/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
PidFile $WORK/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys .ssh/control_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes yes
UsePAM no
AllowUsers $ACCOUNT
AllowTcpForwarding yes
PermitTTY yes
LogLevel VERBOSE
# Debian's own subsystem line: the keys' forced `lifeboat serve` must win over it (sftp asks for the subsystem).
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
mkdir -p /run/sshd
/usr/sbin/sshd -t -f "$WORK/sshd_config" || fail "sshd -t refused the test config"
/usr/sbin/sshd -D -f "$WORK/sshd_config" -E "$WORK/sshd.log" </dev/null >/dev/null 2>&1 &
sshd_pid=$!
for _ in $(seq 1 100); do
  kill -0 "$sshd_pid" 2>/dev/null || fail "sshd exited at start: $(tail -n 5 "$WORK/sshd.log")"
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || fail "sshd does not listen on $PORT"
cat > "$WORK/ssh_config" <<EOF
Host backup-server
  HostName 127.0.0.1
  Port $PORT
  User $ACCOUNT
  IdentitiesOnly yes
  BatchMode yes
  UserKnownHostsFile $WORK/known_hosts
  StrictHostKeyChecking yes
  ConnectTimeout 10
EOF
as_key() { local key=$1; shift; timeout 60 "$1" -F "$WORK/ssh_config" -i "$WORK/${key}_key" "${@:2}"; }
sftp_with() { as_key "$1" sftp -b - backup-server; }   # commands on stdin; fails on the first that fails
# refused KEY NEEDLE WHAT COMMAND...: the command fails and its output says NEEDLE.
refused() {
  local key=$1 needle=$2 what=$3 out; shift 3
  if out=$(as_key "$key" "$@" 2>&1 </dev/null); then fail "$key key: $what succeeded: $out"; fi
  grep -qF "$needle" <<<"$out" || fail "$key key: $what failed without \`$needle\`: $out"
  pass "$key key: $what refused ($needle)"
}
sftp_refused() {
  local key=$1 command=$2 out
  if out=$(sftp_with "$key" <<<"$command" 2>&1); then fail "$key key: sftp \`$command\` succeeded: $out"; fi
  grep -qF "Permission denied" <<<"$out" || fail "$key key: sftp \`$command\` failed otherwise: $out"
  pass "$key key: sftp \`$command\` refused"
}

# --- production key: SFTP in its folder; Lifeboat backs up through it
echo "probe $(date +%s%N)" > "$WORK/probe.txt"
out=$(sftp_with production <<<"put $WORK/probe.txt probe.txt
get probe.txt $WORK/probe.back
ls -l" 2>&1) || fail "production key: sftp put/get/ls: $out"
cmp -s "$WORK/probe.txt" "$WORK/probe.back" || fail "production key: the file read back differs"
grep -q "probe.txt" <<<"$out" || fail "production key: ls does not show probe.txt: $out"
expect_stat "$BACKUPS/production/probe.txt" "$ACCOUNT:$ACCOUNT" 600
pass "production key: sftp put, get and ls in $BACKUPS/production (new file 0600: umask 0077)"
# Append-only: what exists stays as it is (the write key cannot undo a backup).
echo "other $(date +%s%N)" > "$WORK/other.txt"
sftp_refused production "put $WORK/other.txt probe.txt"
sftp_refused production "rm probe.txt"
sftp_refused production "rename probe.txt moved.txt"
sftp_refused production "chmod 644 probe.txt"
cmp -s "$WORK/probe.txt" "$BACKUPS/production/probe.txt" || fail "production key: probe.txt changed"
[ ! -e "$BACKUPS/production/moved.txt" ] || fail "production key: probe.txt was renamed"
expect_stat "$BACKUPS/production/probe.txt" "$ACCOUNT:$ACCOUNT" 600
# ... but for the key's writable_subdirs (pgBackRest's repository): everything below it.
out=$(sftp_with production <<<"mkdir pgrepo
put $WORK/probe.txt pgrepo/a
rename pgrepo/a pgrepo/b
put $WORK/other.txt pgrepo/b
rm pgrepo/b" 2>&1) || fail "production key: sftp in its writable subdir pgrepo: $out"
[ -d "$BACKUPS/production/pgrepo" ] && [ -z "$(ls -A "$BACKUPS/production/pgrepo")" ] || fail "production key: pgrepo is not empty"
sftp_refused production "rmdir pgrepo"
pass "production key: append-only (no overwrite, rm, rename or chmod), but for pgrepo (writable_subdirs)"

cat > "$WORK/backup.yaml" <<EOF
role: backup
timezone: UTC
server:
  url: ssh://$ACCOUNT@127.0.0.1:$PORT$BACKUPS/production
  ssh_key_file: $WORK/production_key
  known_hosts_file: $WORK/known_hosts
encryption: { recipients: [$RECIPIENT] }
signing: { key_file: $WORK/signing_key }
stores:
  postgres: { url: "postgres://postgres@127.0.0.1:$PG_PORT/postgres", databases: [postgres] }
EOF
out=$("$BIN" --config "$WORK/backup.yaml" backup 2>&1) || fail "lifeboat backup through the production key: $out"
manifest=$(find "$BACKUPS/production" -path '*/postgres/manifest.json') && [ -n "$manifest" ] \
  || fail "no postgres manifest under $BACKUPS/production after the backup"
loose=$(find "$BACKUPS/production" -perm /077 -printf '%m %p\n')
[ -z "$loose" ] || fail "files the production key created are open to others: $loose"
pass "lifeboat backup through the production key ($(dirname "${manifest#"$BACKUPS"/}"), nothing group/other accessible)"

# not_run KEY: a command through the key does not run (its forced `lifeboat serve` does instead,
# reads no SFTP request from the empty input and ends); the control key shows the same command runs.
not_run() {
  local out ran="$T/home/ran-$1"
  out=$(as_key "$1" ssh backup-server "touch $ran; echo command-ran" </dev/null 2>&1) || true
  [ ! -e "$ran" ] && ! grep -q "command-ran" <<<"$out" || fail "$1 key: a shell command ran: $out"
  out=$(as_key "$1" ssh -tt backup-server "touch $ran" </dev/null 2>&1) || true
  [ ! -e "$ran" ] || fail "$1 key: a command with a terminal ran: $out"
  pass "$1 key: a shell command (with or without -tt) does not run"
}
not_run production
out=$(as_key control ssh backup-server "touch $T/home/ran-control; echo command-ran" </dev/null 2>&1) || fail "control key: ssh: $out"
[ -e "$T/home/ran-control" ] && grep -q "command-ran" <<<"$out" || fail "control key: the command did not run, so not_run proves nothing: $out"
rm -f "$T/home/ran-control"
pass "control key (unrestricted, second file): the same command runs"
refused production "administratively prohibited" "port forwarding (-W)" ssh -W "127.0.0.1:$PORT" backup-server
refused production "remote port forwarding failed" "remote forwarding (-R)" \
  ssh -N -o ExitOnForwardFailure=yes -R "127.0.0.1:0:127.0.0.1:$PORT" backup-server
out=$(as_key control ssh -W "127.0.0.1:$PORT" backup-server </dev/null 2>&1) || true
grep -q "^SSH-2.0-" <<<"$out" || fail "control key: -W did not reach the forwarded sshd, so the refusals prove nothing: $out"
pass "control key (unrestricted, second file): -W forwarding works on this sshd"

# --- restore key: read and list; no write, rename, delete, mkdir or chmod; Lifeboat verifies through it
out=$(sftp_with restore <<<"get probe.txt $WORK/probe.restore
ls -l" 2>&1) || fail "restore key: sftp get/ls: $out"
cmp -s "$WORK/probe.txt" "$WORK/probe.restore" || fail "restore key: the file read differs"
grep -q "probe.txt" <<<"$out" || fail "restore key: ls does not show probe.txt: $out"
pass "restore key: sftp get and ls"
sftp_refused restore "put $WORK/probe.txt new.txt"
sftp_refused restore "rename probe.txt moved.txt"
sftp_refused restore "rm probe.txt"
sftp_refused restore "mkdir newdir"
sftp_refused restore "chmod 644 probe.txt"
sftp_refused restore "rm ${manifest#"$BACKUPS/production/"}"
[ ! -e "$BACKUPS/production/new.txt" ] && [ ! -e "$BACKUPS/production/moved.txt" ] && [ ! -e "$BACKUPS/production/newdir" ] \
  || fail "restore key: something was created"
expect_stat "$BACKUPS/production/probe.txt" "$ACCOUNT:$ACCOUNT" 600
[ -f "$manifest" ] || fail "restore key: the manifest is gone"
not_run restore
# Each key's serve logs its refusals (sshd drops a forced command's stderr), one file per access.
expect_log() { # ACCESS MODE WHAT PATH: a refusal line in serve-production-ACCESS.log
  local log="$T/log/serve-production-$1.log"
  grep -qF "lifeboat serve ($2, 127.0.0.1 " "$log" 2>/dev/null && grep -qE "\): refused $3 $4: " "$log" \
    || fail "$log lacks the refusal of $3 $4: $(cat "$log" 2>&1)"
}
expect_log write append-only open probe.txt
expect_log write append-only remove probe.txt
expect_log write append-only rename probe.txt
expect_log write append-only setstat probe.txt
expect_log write append-only rmdir pgrepo
expect_log read read-only open new.txt
expect_log read read-only rename probe.txt
expect_log read read-only remove probe.txt
expect_log read read-only mkdir newdir
expect_log read read-only setstat probe.txt
expect_stat "$T/log/serve-production-write.log" "$ACCOUNT:$ACCOUNT" 600
expect_stat "$T/log/serve-production-read.log" "$ACCOUNT:$ACCOUNT" 600
pass "serve's logs: each refusal, per key (serve-production-write.log, serve-production-read.log)"
refused restore "administratively prohibited" "port forwarding (-W)" ssh -W "127.0.0.1:$PORT" backup-server
cat > "$WORK/restore.yaml" <<EOF
role: restore
timezone: UTC
server:
  url: ssh://$ACCOUNT@127.0.0.1:$PORT$BACKUPS/production
  ssh_key_file: $WORK/restore_key
  known_hosts_file: $WORK/known_hosts
encryption: { identity_file: $WORK/age.key }
signing: { allowed_signers_file: $WORK/allowed_signers }
stores:
  postgres: { url: "postgres://postgres@127.0.0.1:$PG_PORT/postgres", databases: [postgres] }
EOF
out=$("$BIN" --config "$WORK/restore.yaml" verify --deep 2>&1) || fail "lifeboat verify --deep through the restore key: $out"
pass "restore key: lifeboat verify --deep (download, decrypt, decompress)"

# --- from=: the staging key may only log in from 192.0.2.1
refused staging "Permission denied (publickey)" "a login from 127.0.0.1 (from=\"192.0.2.1\")" sftp -b /dev/null backup-server

# --- cron: the user's crontab holds both jobs per environment; their lines run as the user
crontab=$(crontab -u "$ACCOUNT" -l) || fail "the user has no crontab"
cron_line() { # ENV COMMAND: the job line under its Ansible marker
  awk -v name="#Ansible: lifeboat $2 $1" 'found { print; exit } $0 == name { found = 1 }' <<<"$crontab"
}
for env in production staging; do
  for command in prune verify; do
    line=$(cron_line "$env" "$command")
    [ -n "$line" ] || fail "crontab: no $command line for $env: $crontab"
    [[ "$line" == *" { date -R; $T/bin/lifeboat --config $T/etc/$env.yaml $command; } >> $T/log/$env-$command.log 2>&1" ]] \
      || fail "crontab: the $command line of $env: $line"
  done
done
[[ "$(cron_line production prune)" == "30 3 * * * "* ]] && [[ "$(cron_line production verify)" == "30 5 * * * "* ]] \
  || fail "crontab: not daily at 03:30 and 05:30: $crontab"
pass "crontab: prune (03:30) and verify (05:30) for production and staging"

# cron_run ENV COMMAND: the crontab's command, as cron runs it (the user, /bin/sh, cron's PATH, home).
cron_run() {
  local line; line=$(cron_line "$1" "$2")
  (cd "$T/home" && env -i PATH=/usr/bin:/bin /usr/sbin/runuser -u "$ACCOUNT" -- /bin/sh -c "$(cut -d' ' -f6- <<<"$line")")
}
# A run a killed backup left three years ago (no manifest): prune's to remove.
out=$(sftp_with production <<<"mkdir 2020-01-01
mkdir 2020-01-01/postgres
put $WORK/probe.txt 2020-01-01/postgres/postgres.dump.zst.age" 2>&1) || fail "production key: sftp mkdir/put: $out"
cron_run production prune || fail "the production prune line failed: $(cat "$T/log/production-prune.log")"
[ ! -e "$BACKUPS/production/2020-01-01" ] || fail "prune left the incomplete 2020-01-01 run"
[ -f "$manifest" ] || fail "prune removed the only complete run"
grep -q "postgres: kept 1 run(s), removed 1 run(s)" "$T/log/production-prune.log" \
  || fail "the prune log does not say what it did: $(cat "$T/log/production-prune.log")"
[ "$(stat -c %U "$T/log/production-prune.log")" = "$ACCOUNT" ] || fail "the prune log is not the user's"
cron_run production prune || fail "the production prune line failed again"
# Two runs, each after its date line, the first one's still there.
[ "$(grep -cE '^[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} [+-][0-9]{4}$' "$T/log/production-prune.log")" -eq 2 ] \
  && [ "$(grep -c "^prune freed" "$T/log/production-prune.log")" -eq 2 ] && grep -q "removed 1 run(s)" "$T/log/production-prune.log" \
  || fail "a second prune did not append to the log after a date line: $(cat "$T/log/production-prune.log")"
pass "cron line: production prune removes the incomplete run, keeps the complete one, appends to its log"
cron_run production verify || fail "the production verify line failed: $(cat "$T/log/production-verify.log")"
grep -q "postgres" "$T/log/production-verify.log" || fail "the verify log names no run: $(cat "$T/log/production-verify.log")"
pass "cron line: production verify passes and logs"
cron_run staging prune || fail "the staging prune line failed: $(cat "$T/log/staging-prune.log")"
if cron_run staging verify; then fail "staging verify passed with no backup in staging"; fi
grep -q "error: no complete backup" "$T/log/staging-verify.log" \
  || fail "the staging verify log lacks its error: $(cat "$T/log/staging-verify.log")"
pass "cron lines: staging prune passes on an empty folder; its verify fails, with the error in its log"

echo "all ansible tests passed"
