"""What the benchmark scripts in this folder share (Python 3 stdlib only, no side effects on import).

    postgres, stores: running and timing steps (measure, combine), process CPU accounting, the
        test servers' state paths and ssh settings, Lifeboat configs and keys, report lines
    gen_minio.py, mongo_tool.py, influx_tool.py: registry-like sample values, the tool command line
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024
PROG = "bench"  # the prefix of die()'s message; each script sets its own


def env(name, default):
    v = os.environ.get(name)
    return v if v not in (None, "") else default


# The test servers (scripts/servers/*.sh): their ports (the NAME=PORT lines of
# scripts/servers/ports, the one table of them), pid files, ssh client key and known hosts.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "servers", "ports")) as _table:
    PORTS = {k: v for k, v in (line.strip().split("=", 1) for line in _table if "=" in line and not line.startswith("#"))}
STATE = env("LIFEBOAT_TEST_STATE", "/var/tmp/lifeboat-test/state")
SSH_PORT = env("BENCH_SSH_PORT", PORTS["SSH_PORT"])
SSH_KEY = f"{STATE}/sshd/client_key"
KNOWN_HOSTS = f"{STATE}/sshd/known_hosts"
SSH_CMD = (f"ssh -p {SSH_PORT} -i {SSH_KEY} -o UserKnownHostsFile={KNOWN_HOSTS} "
           f"-o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes")
LIFEBOAT = env("LIFEBOAT_BIN", os.path.expanduser("~/.cache/lifeboat-target/release/lifeboat"))

REPORT = []  # lines of the final report
TARGETS = []  # one dict per target line, written by save_report to --json FILE
ARGS = None  # the parsed command line (parse_args)


def parse_args(doc, options, flags):
    """The command line, its description the first paragraph of doc: options ((name, argparse
    keywords) pairs), then flags ((name, help) pairs, each true when given)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, kw in options:
        ap.add_argument(name, **kw)
    for name, help_ in flags:
        ap.add_argument(name, action="store_true", help=help_)
    ap.add_argument("--json", metavar="FILE",
                    help="also write the targets as JSON to FILE: one object per row, with its value, limit and verdict")
    global ARGS
    ARGS = ap.parse_args()
    return ARGS


def say(*a):
    print(*a, file=sys.stderr, flush=True)


def die(msg):
    say(f"{PROG}: {msg}")
    sys.exit(1)


def sh(cmd, check=True, capture=True, **kw):
    """Run an untimed helper; str runs under bash. Returns stdout (stripped) when captured."""
    if isinstance(cmd, str):
        cmd = ["bash", "-o", "pipefail", "-c", cmd]
    r = subprocess.run(cmd, text=True, stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None, **kw)
    if check and r.returncode != 0:
        die(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n{(r.stderr or '').strip()[-2000:]}")
    return r.stdout.strip() if capture else ""


def require(tools):
    """Stop unless every tool is on PATH and GNU time (which measure() runs) is installed."""
    for tool in tools:
        if not shutil.which(tool):
            die(f"{tool} is not installed")
    if not os.access("/usr/bin/time", os.X_OK):
        die("/usr/bin/time is not installed (Debian package `time`)")


def check_ssh():
    r = subprocess.run(SSH_CMD.split() + ["root@127.0.0.1", "true"], capture_output=True, text=True)
    if r.returncode != 0:
        die(f"ssh to 127.0.0.1:{SSH_PORT} failed ({r.stderr.strip()}); start it: scripts/servers/sshd.sh start")


def fsize(path):
    return os.path.getsize(path) if os.path.exists(path) else None


def du(path):
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dp, f)).st_size
            except OSError:
                pass
    return total


def clean_dir(path):
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


def tail(path, n=5):
    try:
        return [l.rstrip() for l in open(path, errors="replace").read().splitlines() if l.strip()][-n:]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# Lifeboat's keys and configs

def ensure_keys(config_dir):
    """(age identity file, its recipient, openssl passphrase file) in config_dir, made once."""
    key = os.path.join(config_dir, "age.key")
    if not os.path.exists(key):
        sh(["age-keygen", "-o", key])
    recipient = sh(["age-keygen", "-y", key])
    passfile = os.path.join(config_dir, "passphrase")
    if not os.path.exists(passfile):
        sh(f"openssl rand -hex 32 > {passfile} && chmod 600 {passfile}")
    return key, recipient, passfile


def write_configs(backup_path, restore_path, server_path, recipient, key, stores):
    """A backup and a restore config for the ssh server on 127.0.0.1; stores: the `stores:` block."""
    common = f"""timezone: UTC
server:
  url: ssh://root@127.0.0.1:{SSH_PORT}{server_path}
  ssh_key_file: {SSH_KEY}
  known_hosts_file: {KNOWN_HOSTS}
"""
    signing_key, allowed = ensure_signing_key(os.path.dirname(os.path.abspath(backup_path)))
    open(backup_path, "w").write(
        f"role: backup\n{common}encryption:\n  recipients: [{recipient}]\nsigning:\n  key_file: {signing_key}\n{stores}")
    open(restore_path, "w").write(
        f"role: restore\n{common}encryption:\n  identity_file: {key}\nsigning:\n  allowed_signers_file: {allowed}\n{stores}")


def ensure_signing_key(config_dir):
    """The manifest signing key of the backup configs in config_dir, and allowed_signers for it."""
    key = os.path.join(config_dir, "signing_key")
    allowed = os.path.join(config_dir, "allowed_signers")
    if not os.path.exists(key):
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lifeboat@bench", "-f", key])
    with open(key + ".pub") as f:
        public = f.read().strip()
    with open(allowed, "w") as f:
        f.write(f'lifeboat@bench namespaces="lifeboat" {public}\n')
    return key, allowed


# ---------------------------------------------------------------------------------------------
# process CPU accounting

def read_pidfile(name):
    """The pid of the running test server `name` (STATE/name.pid), or None."""
    try:
        pid = int(open(f"{STATE}/{name}.pid").read().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def children_cpu(pid):
    """CPU seconds of the reaped children of pid (cutime + cstime)."""
    if not pid:
        return None
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[13]) + int(f[14])) / TICK
    except OSError:
        return None


def proc_tree(root):
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                try:
                    todo.extend(int(c) for c in open(f"/proc/{p}/task/{t}/children").read().split())
                except OSError:
                    pass
        except OSError:
            pass
    return out


def tree_cpu(pids):
    """CPU seconds (own + reaped children) of the process trees rooted at pids."""
    total = 0.0
    for root in pids:
        if not root:
            continue
        for p in proc_tree(root):
            try:
                f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in f[11:15]) / TICK
            except (OSError, ValueError):
                pass
    return total


def proc_sample(pid):
    """(comm, cpu seconds, VmHWM bytes, write_bytes) of a live process, or None."""
    try:
        raw = open(f"/proc/{pid}/stat").read()
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        f = raw.rsplit(")", 1)[1].split()
        cpu = (int(f[11]) + int(f[12])) / TICK
        hwm = 0
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
                break
        wb = 0
        try:
            for line in open(f"/proc/{pid}/io"):
                if line.startswith("write_bytes:"):
                    wb = int(line.split()[1])
        except OSError:
            pass
        return comm, cpu, hwm, wb
    except (OSError, ValueError):
        return None


def open_write_files(pid, skip):
    """{path: size} of regular files pid holds open for writing, outside the skip prefixes."""
    out = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if not target.startswith("/") or target.startswith(("/dev/", "/proc/", "/sys/")):
                continue
            if any(target.startswith(s) for s in skip):
                continue
            flags = 0
            for line in open(f"/proc/{pid}/fdinfo/{fd}"):
                if line.startswith("flags:"):
                    flags = int(line.split()[1], 8)
            if flags & 3 == 0:  # O_RDONLY
                continue
            try:
                size = os.stat(f"/proc/{pid}/fd/{fd}").st_size
            except OSError:
                size = 0
            out[target] = size
        except (OSError, ValueError):
            pass
    return out


def du_tmp(excludes):
    cmd = ["nice", "-n", "19", "du", "-sbx", "/tmp", "/var/tmp"] + [f"--exclude={e}" for e in excludes]
    r = subprocess.run(cmd, capture_output=True, text=True)
    return sum(int(l.split()[0]) for l in r.stdout.splitlines() if l.strip())


# ---------------------------------------------------------------------------------------------
# measuring one step

class Disk:
    """What measure() watches of local disk: the tree's write_bytes always; with watch also the
    files it holds open for writing outside skip (path prefixes) and the growth of /tmp + /var/tmp
    (without du_excludes)."""

    def __init__(self, skip, du_excludes, watch):
        self.skip, self.du_excludes, self.watch = skip, du_excludes, watch


def measure(label, cmd, log, stdout=None, counters=None, disk=None):
    """Run cmd (list, or str for bash -e -o pipefail), return wall, cpu, rss and more as a dict.

    log: the step's stderr (and stdout unless stdout is given); GNU time's figures go next to it.
    counters: {result key: function giving CPU seconds or None}, read before and after the step,
    for work other processes (servers) do for it; the result holds each one's growth.
    disk: a Disk, or None for no write_bytes/files/du_growth in the result."""
    if isinstance(cmd, str):
        cmd = ["bash", "-o", "pipefail", "-e", "-c", cmd]
    counters = counters or {}
    # Earlier steps' files (dumps, tarballs, uploads) are still being written back to disk; let
    # that finish first, or its I/O and kernel threads land in this step's wall time.
    os.sync()
    time.sleep(1)
    logf = open(log, "w")
    out = open(stdout, "wb") if stdout else logf
    before = {k: f() for k, f in counters.items()}
    say(f"  {label}: {' '.join(cmd) if cmd[0] != 'bash' else cmd[-1]}")
    watch = disk is not None and disk.watch
    du0 = du_tmp(disk.du_excludes) if watch else None
    # GNU time forks the command from a small process, so its %M is the command's own peak RSS
    # (a child forked from this Python process would inherit Python's RSS high-water mark).
    tfile = os.path.join(os.path.dirname(os.path.abspath(log)), ".time")
    t0 = time.monotonic()
    p = subprocess.Popen(["/usr/bin/time", "-f", "%e %U %S %M", "-o", tfile] + cmd,
                         stdout=out, stderr=logf, stdin=subprocess.DEVNULL)
    procs = {}  # pid -> [comm, cpu, hwm, write_bytes]
    top = []    # the command's pid (time's child)
    files = {}
    du_max = [du0]
    wrote = [0]  # max over samples of the live tree's write_bytes (a parent adds its reaped children's)
    done = threading.Event()

    def sampler():
        while not done.is_set():
            total_wb = 0
            for q in proc_tree(p.pid):
                if q == p.pid:
                    continue
                s = proc_sample(q)
                if s:
                    total_wb += s[3]
                    if not top:
                        top.append(q)
                    e = procs.setdefault(q, [s[0], 0.0, 0, 0])
                    e[0] = s[0]
                    e[1] = max(e[1], s[1])
                    e[2] = max(e[2], s[2])
                    e[3] = max(e[3], s[3])
                    if watch:
                        for path, size in open_write_files(q, disk.skip).items():
                            files[path] = max(files.get(path, 0), size)
            wrote[0] = max(wrote[0], total_wb)
            done.wait(0.05)

    def du_sampler():
        while not done.wait(2.0):
            du_max[0] = max(du_max[0], du_tmp(disk.du_excludes))

    ths = [threading.Thread(target=sampler, daemon=True)]
    if watch:
        ths.append(threading.Thread(target=du_sampler, daemon=True))
    for th in ths:
        th.start()
    _, status, _ = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    done.set()
    for th in ths:
        th.join()
    rc = os.waitstatus_to_exitcode(status)
    logf.close()
    if stdout:
        out.close()
    try:
        _, user, sys_, maxrss = open(tfile).read().strip().splitlines()[-1].split()
    except (OSError, ValueError):
        user, sys_, maxrss = 0, 0, 0
    user, sys_, maxrss = float(user), float(sys_), int(maxrss) * 1024
    time.sleep(0.5)  # let server-side sessions (backends, ssh) of this step end and be reaped
    by_comm = {}
    for comm, cpu, hwm, _wb in procs.values():
        e = by_comm.setdefault(comm, [0.0, 0])
        e[0] += cpu
        e[1] = max(e[1], hwm)
    r = dict(label=label, rc=rc, wall=wall, user=user, sys=sys_, cpu=user + sys_, rss=maxrss,
             own_rss=procs[top[0]][2] if top and top[0] in procs else None)
    for k, f in counters.items():
        a, b = before[k], f()
        r[k] = None if a is None or b is None else max(0.0, b - a)
    r.update(by_comm=by_comm, log=log)
    if disk is not None:
        r.update(write_bytes=wrote[0], files=files, du_growth=(du_max[0] - du0) if watch else None)
    say(f"    {wall:.1f} s wall, {r['cpu']:.1f} s cpu, rss {r['rss'] / MiB:.0f} MiB, exit {rc}")
    return r


def combine(label, parts):
    """One result of several measured steps; times and the counters' *_cpu keys add up."""
    r = dict(label=label, rc=max(x["rc"] for x in parts), parts=parts, by_comm={})
    for k in ("wall", "user", "sys", "cpu") + tuple(k for k in parts[0] if k.endswith("_cpu")):
        vals = [x[k] for x in parts]
        r[k] = None if any(v is None for v in vals) else sum(vals)
    r["rss"] = max(x["rss"] for x in parts)
    r["own_rss"] = max((x["own_rss"] or 0) for x in parts)
    for x in parts:
        for comm, (cpu, hwm) in x["by_comm"].items():
            e = r["by_comm"].setdefault(comm, [0.0, 0])
            e[0] += cpu
            e[1] = max(e[1], hwm)
    return r


# ---------------------------------------------------------------------------------------------
# the report

def f1(v):
    return "-" if v is None else f"{v:.1f}"


def mb(v):
    return "-" if v is None else f"{v / 1e6:,.0f} MB" if v >= 1e7 else f"{v / 1e6:,.1f} MB"


def mib(v):
    return "-" if v is None else f"{v / MiB:.0f}"


def out(line=""):
    REPORT.append(line)


def cell(r, key):
    """A column of a step table: peak RSS in MiB, "-" for no value, seconds otherwise."""
    v = r.get(key) if key else None
    if key == "rss":
        return mib(v)
    if key == "own_rss":
        return mib(v) if v else "-"
    return f1(v)


def row(name, r, cols, stored=None, note="", width=44):
    """One line of a step table: name, wall and CPU seconds, cols ((result key, width) pairs, see
    cell), stored bytes, the exit status unless 0, note; or "not run" and note when r is None."""
    if r is None:
        out(f"  {name:<{width}} {'not run':>8}  {note}")
        return
    flag = "" if r["rc"] == 0 else f"  EXIT {r['rc']}"
    cells = "".join(f" {cell(r, k):>{w}}" for k, w in cols)
    out(f"  {name:<{width}} {r['wall']:8.1f} {r['cpu']:8.1f}{cells}"
        f" {('' if stored is None else mb(stored)):>10}{flag}{('  ' + note) if note else ''}")


def target(name, value, limit, fmt, why, width=48, limit_width=7, against=None, measured=None):
    """One line of the targets: value against limit (an upper bound), PASS/FAIL, or n/a (why).
    Also kept for --json: `against` says what a ratio compares with, `measured` holds the raw
    figures it was computed from (seconds, bytes)."""
    TARGETS.append(dict(target=name, value=None if value is None else round(value, 4), limit=limit,
                        verdict="n/a" if value is None else ("PASS" if value <= limit else "FAIL"),
                        against=against, measured=measured or {}, why=None if value is not None else why))
    if value is None:
        out(f"  {name:<{width}} {'n/a':>9}   limit {fmt.format(limit):>{limit_width}}   n/a ({why})")
        return
    out(f"  {name:<{width}} {fmt.format(value):>9}   limit {fmt.format(limit):>{limit_width}}   "
        f"{'PASS' if value <= limit else 'FAIL'}")


def breakdown(r, n=6):
    items = sorted(r["by_comm"].items(), key=lambda kv: -kv[1][0])
    items = [f"{c} {cpu:.1f} s/{hwm / MiB:.0f} MiB" for c, (cpu, hwm) in items
             if c not in ("bash", "time") and (cpu >= 0.05 or hwm > 8 * MiB)][:n]
    return ", ".join(items)


def save_report(folder, name, started, results, last_line):
    """Close the report with the load average and last_line, print it, and keep it as
    report-NAME-STAMP.txt, results as results-NAME-STAMP.json in folder."""
    out("")
    out(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"(other work on this machine inflates wall times)")
    out(last_line)
    text = "\n".join(REPORT)
    print(text, flush=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(folder, f"report-{name}-{stamp}.txt"), "w") as fh:
        fh.write(text + "\n")
    with open(os.path.join(folder, f"results-{name}-{stamp}.json"), "w") as fh:
        json.dump(results, fh, indent=1, default=str)
    if ARGS is not None and ARGS.json:
        doc = dict(benchmark=name, started=started.isoformat(timespec="seconds"), host=os.uname().nodename,
                   cores=os.cpu_count(), load_average_end=os.getloadavg()[0], lifeboat=LIFEBOAT, rows=TARGETS)
        with open(ARGS.json, "w") as fh:
            json.dump(doc, fh, indent=1, default=str)
            fh.write("\n")
        say(f"targets written as JSON to {ARGS.json}")


# ---------------------------------------------------------------------------------------------
# the data generators (gen_minio.py, mongo_tool.py; mongo_tool.py runs under the venv's python).
# A change to these values changes the data: bump GEN_VERSION in both generators.

GIVEN = ["Amina", "Chidi", "Ngozi", "Tunde", "Fatima", "Kwame", "Zoë", "José", "Åsa", "Nguyễn",
         "Ольга", "محمد", "Grace", "Emeka", "Halima", "Ibrahim", "Mary", "Peter", "Aisha", "Samuel"]
FAMILY = ["Okafor", "Adeyemi", "Mensah", "Diallo", "Banda", "Phiri", "Mwale", "Kamau", "Otieno",
          "Abubakar", "Nwosu", "Eze", "Bello", "Sesay", "Kamara", "Koroma", "Tembo", "Lungu"]
PLACES = ["Ibombo", "Isamba", "Itambo", "Ezhi", "Ilanga", "Irundu", "Zobwe", "Afue", "Embe",
          "Esewa", "Gafa", "Chuminga", "Pualula", "Ama", "Nsali", "Soka", "Chibiya"]
STATUS = ["DECLARED", "VALIDATED", "REGISTERED", "CERTIFIED", "ISSUED", "REJECTED"]


def run_tool(doc, commands):
    """`tool.py COMMAND ARGS...`: commands[COMMAND](*ARGS), or exit with the usage doc."""
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(doc)
    commands[sys.argv[1]](*sys.argv[2:])
