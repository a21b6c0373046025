#!/usr/bin/env python3
"""Tests of the Helm chart deploy/helm/lifeboat, with the real Helm library (helm-python-sdk), the helm
CLI (`helm lint --strict`) and Kubernetes' own schemas (kubernetes-validate --strict). No cluster is
needed. The rendered configurations run in the real lifeboat (LIFEBOAT_BIN), the PostgreSQL sidecar's
and restore Job's against a real PostgreSQL 15 and pgBackRest (as root, for a read-only mount), and the
jobs of a deployment taking over from OpenCRVS's original scripts (their Secrets as they are) against a
private OpenSSH sshd holding backups made with the real tar and openssl.

Run from the repository root, after scripts/install-deps (the venv, helm, pgBackRest):
LIFEBOAT_BIN=target/debug/lifeboat $HOME/.cache/lifeboat-tools/venv/bin/python tests/helm/test_chart.py
Exits 0 when every test passes.
"""

import copy
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import socket
import threading
import traceback

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "deploy", "helm", "lifeboat")
HERE = os.path.join(ROOT, "tests", "helm")
TOOLS = os.environ.get("LIFEBOAT_TOOLS", os.path.join(os.path.expanduser("~"), ".cache", "lifeboat-tools"))
HELM = os.path.join(TOOLS, "bin", "helm")
PGBACKREST = os.path.join(TOOLS, "pgbackrest-2.55.1-1", "usr", "bin", "pgbackrest")
KUBE_VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]
STORES = ["postgres", "mongodb", "influxdb", "minio"]
VALUES_FILES = ["production.yaml", "staging.yaml", "manual-restore.yaml",
                "production-differential.yaml", "disaster-recovery-postgres.yaml",
                "takeover-production.yaml", "takeover-staging.yaml"]
MODE_0400 = 0o400
# Secret files in pods that mount PostgreSQL's data volume: no fsGroup there, so group root, 0440.
MODE_0440 = 0o440
PG_UID = 999


def values_file(name):
    with open(os.path.join(HERE, name)) as f:
        return helm.values_from_yaml(f.read())


def merged(base, **changes):
    """base with dotted keys set, as `--set a.b=c` would."""
    out = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = out
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def validate(obj):
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def render(values, name="prod"):
    """Every rendered object, as dicts; each validated against Kubernetes' strict schemas."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=name, namespace="opencrvs")
    objects = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__template"] = path
                objects.append(doc)
    for obj in objects:
        validate({k: v for k, v in obj.items() if k != "__template"})
    return objects


def notes(values, name="prod"):
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=name, namespace="opencrvs")["lifeboat/templates/NOTES.txt"]


def refusal(values):
    """The message of a render that must fail."""
    try:
        render(values)
    except helm.HelmError as e:
        return str(e)
    raise AssertionError(f"render succeeded but should have been refused: {values}")


def kind(objects, k):
    return [o for o in objects if o["kind"] == k]


def job_spec(obj):
    return obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]


def configs(objects):
    """The Lifeboat configuration of each store, parsed, from the role's ConfigMap."""
    (cm,) = [o for o in kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    return {key[: -len(".yaml")]: yaml.safe_load(text) for key, text in cm["data"].items()}


def sidecar_configmap(objects):
    (cm,) = [o for o in kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-postgres-sidecar")]
    return cm["data"]


def config_paths(cfg, suffix="_file"):
    """Every value of a key ending in suffix, anywhere in a configuration."""
    found = []
    for key, value in cfg.items():
        if isinstance(value, dict):
            found += config_paths(value, suffix)
        elif key.endswith(suffix) and isinstance(value, str):
            found.append(value)
    return found


def mount_of(container, path):
    """The volume mount a path lies on (the longest mountPath above it), or None."""
    over = [m for m in container["volumeMounts"] if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    return max(over, key=lambda m: len(m["mountPath"]), default=None)


def check_files_mounted(container, volumes, cfg):
    """Each file a configuration names is an item of a secret or configMap volume mounted there,
    and each folder Lifeboat writes to is on a writable mount."""
    for path in config_paths(cfg):
        m = mount_of(container, path)
        assert m is not None, f"{path} is on no volume mount"
        source = volumes[m["name"]].get("secret") or volumes[m["name"]].get("configMap")
        items = {f"{m['mountPath']}/{i['path']}" for i in source["items"]}
        assert path in items, (path, items)
    writable = [cfg.get("work_dir"), cfg.get("monitoring", {}).get("textfile_dir")]
    for store in cfg["stores"].values():
        writable.append(store.get("pgbackrest_dir"))
    for path in filter(None, writable):
        m = mount_of(container, path)
        assert m is not None and not m.get("readOnly"), f"{path} is not on a writable mount"
        assert "emptyDir" in volumes[m["name"]] or "persistentVolumeClaim" in volumes[m["name"]] or "hostPath" in volumes[m["name"]]


def check_container_hardening(c):
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True and sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]


def check_job_hardening(obj, role, secret_mode=MODE_0400):
    """What every job must have, whatever its store or role."""
    if obj["kind"] == "CronJob":
        assert obj["spec"]["concurrencyPolicy"] == "Forbid" and obj["spec"]["timeZone"], obj["metadata"]["name"]
    spec = job_spec(obj)
    assert spec["backoffLimit"] >= 0 and spec["activeDeadlineSeconds"] > 0, obj["metadata"]["name"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"].endswith("lifeboat")
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    check_container_hardening(c)
    assert c["args"][:2] == ["--config", "/etc/lifeboat/lifeboat.yaml"] and c["args"][2] == role
    store = obj["metadata"]["labels"]["lifeboat/store"]
    assert c["args"][3:5] == ["--store", store]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert set(volumes) == set(mounts), (volumes.keys(), mounts.keys())
    for name, v in volumes.items():
        if "secret" in v:
            assert v["secret"]["defaultMode"] == secret_mode, f"{name} is not mounted with mode {secret_mode:o}"
            assert mounts[name]["readOnly"] is True
    assert volumes["config"]["configMap"]["items"] == [{"key": f"{store}.yaml", "path": "lifeboat.yaml"}]
    server_files = {i["path"] for i in volumes["server-secrets"]["secret"]["items"]}
    assert "known_hosts" in server_files
    # the SSH key: in the role's Secret, or alone from an existing one (secrets.ssh_key_secret), never both
    assert ("ssh_key" in server_files) != ("ssh-key" in volumes), (server_files, list(volumes))
    # scratch space only where a restore (or influxd's backup folder) needs it
    needs_scratch = role == "restore" or store == "influxdb"
    assert ("work" in volumes) == needs_scratch, obj["metadata"]["name"]
    return c, volumes


def strategic_merge(base, patch, key=None):
    """kubectl's strategic merge patch, for what a pod template holds: containers and volumes merge
    by name, volume mounts by mountPath, other lists are replaced."""
    merge_keys = {"containers": "name", "volumes": "name", "volumeMounts": "mountPath"}
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and key in merge_keys:
        mk = merge_keys[key]
        out = [dict(b) for b in base]
        for item in patch:
            same = [i for i, b in enumerate(out) if b[mk] == item[mk]]
            if same:
                out[same[0]] = strategic_merge(out[same[0]], item)
            else:
                out.append(item)
        return out
    return patch


def test_lint_strict():
    for values in [None] + [values_file(f) for f in VALUES_FILES]:
        report = helm.lint(CHART, values, strict=True, kube_version="v1.30.0")
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_helm_cli_lint_strict():
    """The helm CLI's own `helm lint --strict` on every values file: clean (only the icon hint), and a
    wrong value fails it."""
    assert os.access(HELM, os.X_OK), f"{HELM} is missing: run scripts/install-deps"
    for name in [None] + VALUES_FILES:
        for kube in ["1.30.0", None]:
            args = [HELM, "lint", "--strict", CHART] + (["-f", os.path.join(HERE, name)] if name else [])
            args += ["--kube-version", kube] if kube else []
            r = subprocess.run(args, capture_output=True, text=True, timeout=120)
            out = r.stdout + r.stderr
            assert r.returncode == 0 and "1 chart(s) linted, 0 chart(s) failed" in out, (name, out)
            findings = [l for l in out.splitlines() if l.startswith("[")]
            assert findings == ["[INFO] Chart.yaml: icon is recommended"], (name, findings)
    r = subprocess.run([HELM, "lint", "--strict", CHART, "-f", os.path.join(HERE, "production.yaml"),
                        "--set", "backup.server.port=0"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "/backup/server/port" in r.stdout + r.stderr, r.stdout + r.stderr


def test_defaults_render_nothing():
    assert render({}) == []
    assert "Nothing is enabled" in notes({})


def test_production():
    objects = render(values_file("production.yaml"))
    crons = {o["metadata"]["name"]: o for o in kind(objects, "CronJob")}
    assert kind(objects, "Job") == []
    assert sorted(crons) == sorted(
        ["prod-lifeboat-backup-postgres", "prod-lifeboat-backup-mongodb",
         "prod-lifeboat-backup-influxdb", "prod-lifeboat-backup-minio"]), sorted(crons)
    schedules = {n: c["spec"]["schedule"] for n, c in crons.items()}
    assert schedules == {
        "prod-lifeboat-backup-postgres": "0 2 * * *",    # the store's own, by kind
        "prod-lifeboat-backup-mongodb": "30 1 * * *",    # the store's own
        "prod-lifeboat-backup-influxdb": "15 1 * * *",   # the role's default
        "prod-lifeboat-backup-minio": "0 3 * * *",       # the differential kind's
    }, schedules
    for c in crons.values():
        assert c["spec"]["timeZone"] == "Africa/Lagos"
        assert c["spec"]["concurrencyPolicy"] == "Forbid"
        assert "restore" not in c["metadata"]["name"]
        container, volumes = check_job_hardening(c, "backup")
        assert "--yes" not in container["args"]
        assert volumes["server-secrets"]["secret"]["secretName"] == "lifeboat-backup-server"
        # production holds no decryption key
        assert {i["path"] for i in volumes["server-secrets"]["secret"]["items"]} == {"ssh_key", "known_hosts", "signing_key"}
    args = {n: c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] for n, c in crons.items()}
    assert args["prod-lifeboat-backup-postgres"][2:] == ["backup", "--store", "postgres"]
    pg_pod = crons["prod-lifeboat-backup-postgres"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pg_secret = {v["name"]: v for v in pg_pod["volumes"]}["store-secrets"]["secret"]
    assert pg_secret["secretName"] == "postgres-admin-user"
    assert pg_secret["items"] == [{"key": "POSTGRES_PASSWORD", "path": "password"}]
    # the chart creates no Secret when an existing one is named
    assert kind(objects, "Secret") == []
    # its own ServiceAccount, with no Role and no token
    (account,) = kind(objects, "ServiceAccount")
    assert account["metadata"]["name"] == "prod-lifeboat" and account["automountServiceAccountToken"] is False
    assert not [o for o in objects if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]
    assert not [o for o in kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-postgres-sidecar")]

    cfg = configs(objects)
    assert sorted(cfg) == sorted(STORES)
    for name, c in crons.items():
        store = c["metadata"]["labels"]["lifeboat/store"]
        pod = job_spec(c)["template"]["spec"]
        check_files_mounted(pod["containers"][0], {v["name"]: v for v in pod["volumes"]}, cfg[store])
    for store, c in cfg.items():
        assert c["role"] == "backup" and c["timezone"] == "Africa/Lagos"
        assert list(c["stores"]) == [store] and c["stores"][store]["enabled"] is True
        assert c["encryption"] == {"recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]}
        assert c["server"]["known_hosts_file"] == "/secrets/lifeboat/known_hosts"
        assert c["server"]["ssh_key_file"] == "/secrets/lifeboat/ssh_key"
        assert c["monitoring"] == {"pushgateway_url": "http://pushgateway.monitoring:9091"}
    assert cfg["postgres"]["server"]["url"] == "ssh://lifeboat@backup.example.org:2222/srv/lifeboat/production"
    # a store's own server_dir overrides the role's
    assert cfg["minio"]["server"]["url"] == "ssh://lifeboat@backup.example.org:2222/srv/lifeboat/production-minio"
    assert cfg["postgres"]["stores"]["postgres"] == {
        "enabled": True, "type": "dump", "url": "postgres://postgres@postgres-0.postgres:5432/postgres",
        "databases": ["events"], "password_file": "/secrets/postgres/password"}
    assert cfg["minio"]["stores"]["minio"]["access_key_file"] == "/secrets/minio/access_key"
    assert cfg["minio"]["stores"]["minio"]["type"] == "differential"
    assert cfg["influxdb"]["work_dir"] == "/work" and "work_dir" not in cfg["mongodb"]


def test_staging():
    objects = render(values_file("staging.yaml"), name="staging")
    crons = {o["metadata"]["labels"]["lifeboat/store"]: o for o in kind(objects, "CronJob")}
    assert sorted(crons) == ["minio", "mongodb", "postgres"], sorted(crons)
    assert kind(objects, "Job") == []
    assert {s: c["spec"]["schedule"] for s, c in crons.items()} == {
        "postgres": "0 4 * * *", "mongodb": "0 4 * * *", "minio": "30 4 * * *"}
    for store, c in crons.items():
        assert "backup" not in c["metadata"]["name"]
        assert c["spec"]["timeZone"] == "Europe/Berlin"
        container, volumes = check_job_hardening(c, "restore")
        assert container["args"][2:] == ["restore", "--store", store, "--yes"]
        assert {i["path"] for i in volumes["server-secrets"]["secret"]["items"]} == {"ssh_key", "known_hosts", "allowed_signers", "age_identity"}
        assert volumes["work"]["emptyDir"]["sizeLimit"] == "20Gi"
    (secret,) = kind(objects, "Secret")
    assert secret["metadata"]["name"] == volumes["server-secrets"]["secret"]["secretName"]
    assert set(secret["stringData"]) == {"ssh_key", "known_hosts", "allowed_signers", "age_identity"}
    cfg = configs(objects)
    for store, c in cfg.items():
        assert c["role"] == "restore" and list(c["stores"]) == [store]
        assert c["encryption"] == {"identity_file": "/secrets/lifeboat/age_identity"}
        # a store's own server_dir overrides the role's backup_server_dir
        folder = "/srv/lifeboat/production-minio" if store == "minio" else "/srv/lifeboat/production"
        assert c["server"]["url"] == f"ssh://lifeboat-restore@backup.example.org:22{folder}", c["server"]
        assert c["work_dir"] == "/work" and "monitoring" not in c
        pod = job_spec(crons[store])["template"]["spec"]
        check_files_mounted(pod["containers"][0], {v["name"]: v for v in pod["volumes"]}, c)


def test_manual_restore():
    objects = render(values_file("manual-restore.yaml"), name="dr")
    assert kind(objects, "CronJob") == []
    jobs = {o["metadata"]["labels"]["lifeboat/store"]: o for o in kind(objects, "Job")}
    assert sorted(jobs) == ["mongodb", "postgres"]
    for store, j in jobs.items():
        container, volumes = check_job_hardening(j, "restore")
        assert container["args"][2:] == ["restore", "--store", store, "--yes", "--from", "2026-11-20"]
        assert {i["path"] for i in volumes["server-secrets"]["secret"]["items"]} == {"ssh_key", "known_hosts", "allowed_signers", "passphrase"}
        assert volumes["work"]["emptyDir"]["sizeLimit"] == "50Gi"
    assert configs(objects)["postgres"]["encryption"] == {"passphrase_file": "/secrets/lifeboat/passphrase"}


def test_manual_backup():
    objects = render(merged(values_file("production.yaml"), backup__cronjob=False))
    assert kind(objects, "CronJob") == [] and len(kind(objects, "Job")) == 4
    for j in kind(objects, "Job"):
        check_job_hardening(j, "backup")


def test_manual_restore_from_the_command_line():
    """The README's `--set restore.cronjob=false,restore.from=ID` over the staging values."""
    values = helm.parse_set_string("restore.cronjob=false,restore.from=2026-11-20_2")
    objects = render(merged(values_file("staging.yaml"), restore__cronjob=values["restore"]["cronjob"],
                            restore__from=values["restore"]["from"]))
    assert kind(objects, "CronJob") == [] and len(kind(objects, "Job")) == 3
    for j in kind(objects, "Job"):
        container, _ = check_job_hardening(j, "restore")
        assert container["args"][-2:] == ["--from", "2026-11-20_2"]


def test_backup_secret_holds_no_decryption_key():
    inline = merged(values_file("production.yaml"), backup__secrets={"ssh_key": "KEY", "known_hosts": "host ssh-ed25519 AAAA", "signing_key": "SIGNING"})
    (secret,) = kind(render(inline), "Secret")
    assert set(secret["stringData"]) == {"ssh_key", "known_hosts", "signing_key"}, secret["stringData"].keys()
    assert "'age_identity' not allowed" in refusal(merged(inline, backup__secrets__age_identity="AGE-SECRET-KEY-1X"))
    assert "backup.secrets.known_hosts is empty" in refusal(merged(inline, backup__secrets__known_hosts=""))
    assert "backup.secrets.signing_key is empty" in refusal(merged(inline, backup__secrets__signing_key=""))
    # What the backup jobs sign with, and what the restore jobs trust.
    assert configs(render(inline))["postgres"]["signing"] == {"key_file": "/secrets/lifeboat/signing_key"}
    staging = values_file("staging.yaml")
    assert configs(render(staging, name="staging"))["postgres"]["signing"] == {
        "allowed_signers_file": "/secrets/lifeboat/allowed_signers",
        "restore_unsigned_backups_made_before_signing": False,
    }
    assert "restore.secrets.allowed_signers is empty" in refusal(merged(staging, restore__secrets__allowed_signers=""))


def test_refusals():
    prod, staging = values_file("production.yaml"), values_file("staging.yaml")
    both = merged(prod, restore=staging["restore"])
    assert "backup.enabled and restore.enabled are both true" in refusal(both)
    no_hosts = merged(staging, restore__secrets__known_hosts="")
    assert "restore.secrets.known_hosts is empty" in refusal(no_hosts)
    write_key = merged(staging, restore__server__read_only_key=False)
    message = refusal(write_key)
    assert "the folder production writes to, with a key that may write" in message and "/srv/lifeboat/production" in message
    # a write key is accepted for a folder that is not production's (a copy of the backups)
    copy_dir = merged(write_key, restore__server__backup_server_dir="/srv/lifeboat/copy",
                      restore__server__production_dir="/srv/lifeboat/production")
    assert kind(render(copy_dir), "CronJob")
    # ... but not when one store's own folder is production's
    one_store = merged(copy_dir, mongodb__server_dir="/srv/lifeboat/production/")
    assert "restore of mongodb reads /srv/lifeboat/production" in refusal(one_store)
    assert "set restore.cronjob=false" in refusal(merged(staging, restore__from="2026-11-20"))
    assert "backup.encryption.recipients is empty" in refusal(merged(prod, backup__encryption__recipients=[]))
    assert "minio.credentials_secret.name is empty" in refusal(merged(prod, minio__credentials_secret={"name": ""}))
    assert "backup.server.host is empty" in refusal(merged(prod, backup__server__host=""))
    assert "backup.secrets: no SSH key" in refusal(merged(prod, backup__secrets={"known_hosts": "h ssh-ed25519 AAAA"}))
    assert "restore.secrets.age_identity is empty" in refusal(merged(staging, restore__secrets__age_identity=""))
    assert "restore.secrets.passphrase is empty while restore.encryption.mode is passphrase" in refusal(
        merged(staging, restore__encryption__mode="passphrase"))
    assert "mongodb.config.password_file is set by the chart" in refusal(merged(prod, mongodb__config__password_file="/x"))
    assert "postgres.config.schedule is set by the chart" in refusal(merged(prod, postgres__config__schedule="0 1 * * *"))


def test_differential_refusals():
    prod, dr = values_file("production-differential.yaml"), values_file("disaster-recovery-postgres.yaml")
    for values, needle in [
        (merged(prod, postgres__differential__passphrase_secret={"name": "", "key": "passphrase"}),
         "postgres.differential.passphrase_secret.name is empty"),
        (merged(prod, postgres__config__databases=["events"]), "postgres.config.databases is for type dump"),
        (merged(prod, postgres__config__data_directory="/data"), "postgres.config.data_directory is set by the chart"),
        (merged(prod, postgres__differential__data_directory="/pgdata"),
         "postgres.differential.data_directory /pgdata is not inside postgres.differential.data_mount_path /var/lib/postgresql/data"),
        (merged(prod, backup__cronjob=False), "a differential backup runs in the PostgreSQL pod's lifeboat sidecar"),
        (merged(dr, restore__cronjob=True, restore__target_time=""), "the restore replaces the whole cluster while PostgreSQL is stopped"),
        (merged(dr, postgres__differential__data_claim=""), "postgres.differential.data_claim is empty"),
        (merged(values_file("manual-restore.yaml"), restore__target_time="2026-11-20 14:30:00+00"),
         "restore.target_time is set but postgres is not enabled with type differential"),
        (merged(dr, postgres__enabled=False), "restore.target_time is set but postgres is not enabled with type differential"),
    ]:
        assert needle in refusal(values), (needle, refusal(values))
    # a data directory below the mount (PGDATA=/var/lib/postgresql/data/pgdata) is fine
    render(merged(prod, postgres__differential__data_directory="/var/lib/postgresql/data/pgdata"))


def test_monitoring_refusals():
    prod = values_file("production.yaml")
    for textfile in [{"enabled": True}, {"enabled": True, "host_path": "/var/lib/node_exporter", "claim_name": "metrics"}]:
        assert "set exactly one of monitoring.textfile.host_path" in refusal(merged(prod, monitoring__textfile=textfile))
    assert "monitoring.webhook.secret.name is empty" in refusal(merged(prod, monitoring__webhook__on_success=True))


def test_schema_names_the_wrong_value():
    prod = values_file("production.yaml")
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(prod)
        for changes, needle in [
            ({"backup__server__port": "22"}, "/backup/server/port"),
            ({"backup__cronjob": "yes"}, "/backup/cronjob"),
            ({"mongodb__type": "differential"}, "/mongodb/type"),
            ({"influxdb__schedule": "every night"}, "/influxdb/schedule"),
            ({"backup__server__backup_server_dir": "relative/dir"}, "/backup/server/backup_server_dir"),
            ({"backup__sever": {}}, "'sever' not allowed"),
            ({"restore__from": "2026-11-20; rm -rf"}, "/restore/from"),
            ({"restore__target_time": "yesterday"}, "/restore/target_time"),
            ({"postgres__differential__run_as_user": 0}, "/postgres/differential/run_as_user"),
            ({"postgres__differential__stanza": "main; rm"}, "/postgres/differential/stanza"),
            ({"postgres__differential__postgres_pgbackrest": "pg backrest"}, "/postgres/differential/postgres_pgbackrest"),
            ({"monitoring__textfile__host_path": "node_exporter"}, "/monitoring/textfile/host_path"),
            ({"monitoring__webhook__secret": {"name": "hook", "key": ""}}, "/monitoring/webhook/secret/key"),
            ({"serviceAccount__create": "yes"}, "/serviceAccount/create"),
            ({"backup__secrets__ssh_key_secret": {"name": "backup-server-ssh-credentials", "key": ""}}, "/backup/secrets/ssh_key_secret/key"),
            ({"backup__secrets__ssh_key_secret": {"name": "backup-server-ssh-credentials", "host": "h"}}, "'host' not allowed"),
            ({"legacy__passphrase_secret": {"name": "backup-encryption-secret", "key": ""}}, "/legacy/passphrase_secret/key"),
            ({"legacy__import": "yes"}, "/legacy/import"),
            ({"legacy__import_work_dir_size": "lots"}, "/legacy/import_work_dir_size"),
            ({"legacy__passphrase_file": "/x"}, "'passphrase_file' not allowed"),
        ]:
            values = merged(prod, **changes)
            try:
                chart.validate_schema(values)
            except helm.HelmValuesError as e:
                assert needle in str(e), (needle, str(e))
            else:
                raise AssertionError(f"schema accepted {changes}")
            # and an install (render) is refused the same way
            assert needle in refusal(values)


def test_postgres_differential_sidecar():
    """Backup side: no CronJob for postgres; a sidecar patch that, applied to the PostgreSQL StatefulSet,
    gives a valid pod whose PostgreSQL archives through the pgbackrest.conf Lifeboat writes."""
    values = values_file("production-differential.yaml")
    objects = render(values)
    crons = {o["metadata"]["labels"]["lifeboat/store"]: o for o in kind(objects, "CronJob")}
    assert sorted(crons) == ["mongodb"], sorted(crons)
    cfg = configs(objects)
    assert sorted(cfg) == ["mongodb", "postgres"]
    pg = cfg["postgres"]
    store = pg["stores"]["postgres"]
    assert store == {
        "enabled": True, "type": "differential", "url": "postgres://postgres@127.0.0.1:5432/postgres", "process_max": 2,
        "password_file": "/secrets/postgres/password", "passphrase_file": "/secrets/pgbackrest/passphrase",
        "data_directory": "/var/lib/postgresql/data", "pgbackrest_dir": "/var/lib/lifeboat/pgbackrest",
        "socket_directory": "/run/postgresql", "stanza": "main",
        # the sidecar's daemon runs the store's schedule (the CronJobs run the others')
        "schedule": {"full": "0 2 * * 0", "differential": "0 2 * * 1-6"}}, store
    # the store's own server_dir; pgBackRest's repository is <it>/postgres
    assert pg["server"]["url"] == "ssh://lifeboat@backup.example.org:22/srv/lifeboat/production-pg"
    assert cfg["mongodb"]["server"]["url"] == "ssh://lifeboat@backup.example.org:22/srv/lifeboat/production"

    data = sidecar_configmap(objects)
    patch = yaml.safe_load(data["statefulset-patch.yaml"])
    with open(os.path.join(HERE, "opencrvs-postgres-statefulset.yaml")) as f:
        statefulset = yaml.safe_load(f)
    patched = strategic_merge(statefulset, patch)
    validate(patched)
    pod = patched["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert sorted(containers) == ["lifeboat", "postgres"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert len(volumes) == len(pod["volumes"]), "a volume name is used twice"
    postgres, sidecar = containers["postgres"], containers["lifeboat"]
    # what PostgreSQL had is kept
    assert postgres["image"] == "registry.example.org/postgres-pgbackrest:17" and volumes["data"]["persistentVolumeClaim"]
    assert sidecar["args"] == ["--config", "/etc/lifeboat/lifeboat.yaml", "daemon"]
    assert volumes["lifeboat-config"]["configMap"] == {
        "name": "prod-lifeboat-backup-config", "items": [{"key": "postgres.yaml", "path": "lifeboat.yaml"}]}
    # as PostgreSQL's uid (the data directory's owner), never root, read-only root file system
    check_container_hardening(sidecar)
    sc = sidecar["securityContext"]
    assert sc["runAsUser"] == PG_UID and sc["runAsGroup"] == 0 and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "securityContext" not in pod, "the patch must not change the PostgreSQL pod's own securityContext (an fsGroup would re-own the data)"
    assert sidecar["resources"] == values["postgres"]["differential"]["resources"]
    for name, v in volumes.items():
        if name.startswith("lifeboat-") and "secret" in v:
            assert v["secret"]["defaultMode"] == MODE_0440, name
    check_files_mounted(sidecar, volumes, pg)
    # the data directory: the pod's own volume, read-only; the socket folder: PostgreSQL's
    data_mount = mount_of(sidecar, store["data_directory"])
    assert data_mount["name"] == "data" and data_mount["readOnly"] is True
    assert mount_of(postgres, store["data_directory"])["name"] == "data"
    assert mount_of(sidecar, store["socket_directory"])["name"] == mount_of(postgres, store["socket_directory"])["name"] == "postgres-run"
    # pgbackrest.conf is on one volume, at one path, in both containers: the file archive_command names
    conf = store["pgbackrest_dir"] + "/pgbackrest.conf"
    assert mount_of(sidecar, conf) == mount_of(postgres, conf) == {"name": "lifeboat-pgbackrest", "mountPath": "/var/lib/lifeboat"}
    assert "emptyDir" in volumes["lifeboat-pgbackrest"]
    # the archive_command Lifeboat checks for (differential.rs: archive-push, --config=<pgbackrest_dir>/pgbackrest.conf, --stanza)
    command = f"pgbackrest --config={conf} --stanza={store['stanza']} archive-push %p"
    assert data["archive.sql"].splitlines() == [
        "ALTER SYSTEM SET archive_mode = 'on';",
        f"ALTER SYSTEM SET archive_command = '{command}';",
        "ALTER SYSTEM SET archive_timeout = '60';"], data["archive.sql"]
    assert data["postgresql.conf"].splitlines() == [
        "archive_mode = on", f"archive_command = '{command}'", "archive_timeout = 60"], data["postgresql.conf"]
    # another stanza and pgBackRest path reach both the configuration and archive_command
    other = render(merged(values, postgres__differential__stanza="opencrvs", postgres__differential__postgres_pgbackrest="/usr/local/bin/pgbackrest"))
    assert configs(other)["postgres"]["stores"]["postgres"]["stanza"] == "opencrvs"
    assert "archive_command = '/usr/local/bin/pgbackrest --config=/var/lib/lifeboat/pgbackrest/pgbackrest.conf --stanza=opencrvs archive-push %p'" \
        in sidecar_configmap(other)["postgresql.conf"]
    # a changed configuration changes the pod template, so re-applying the patch restarts the daemon
    checksum = patch["spec"]["template"]["metadata"]["annotations"]["lifeboat/config-sha256"]
    other_patch = yaml.safe_load(sidecar_configmap(other)["statefulset-patch.yaml"])
    assert other_patch["spec"]["template"]["metadata"]["annotations"]["lifeboat/config-sha256"] != checksum
    # a single schedule string reaches the daemon as is; none: the role's
    one = configs(render(merged(values, postgres__schedule="0 3 * * *")))["postgres"]["stores"]["postgres"]["schedule"]
    assert one == "0 3 * * *"
    assert configs(render(merged(values, postgres__schedule="")))["postgres"]["stores"]["postgres"]["schedule"] == "0 1 * * *"
    text = notes(values)
    for line in ["kubectl -n opencrvs patch statefulset postgres --patch-file lifeboat-patch.yaml",
                 "kubectl -n opencrvs exec postgres-0 -c lifeboat -- lifeboat --config /etc/lifeboat/lifeboat.yaml backup --store postgres --type full",
                 "exec -i postgres-0 -c postgres -- psql -U postgres -f -"]:
        assert line in text, (line, text)


def test_postgres_differential_restore_job():
    """Restore side: one Job on the data volume's claim, as PostgreSQL's uid, kept apart from any
    running PostgreSQL pod, to a point in time."""
    objects = render(values_file("disaster-recovery-postgres.yaml"), name="dr")
    assert kind(objects, "CronJob") == []
    (job,) = kind(objects, "Job")
    container, volumes = check_job_hardening(job, "restore", secret_mode=MODE_0440)
    assert container["args"][2:] == ["restore", "--store", "postgres", "--yes", "--target-time", "2026-11-20 14:30:00+00"]
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == PG_UID and pod["securityContext"]["runAsGroup"] == 0
    assert "fsGroup" not in pod["securityContext"], "an fsGroup would make the data directory group-writable"
    assert pod["affinity"] == {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/os", "labelSelector": {"matchLabels": {"app": "postgres"}}}]}}
    cfg = configs(objects)["postgres"]
    store = cfg["stores"]["postgres"]
    assert cfg["role"] == "restore" and "schedule" not in store
    assert cfg["server"]["url"] == "ssh://lifeboat-restore@backup.example.org:22/srv/lifeboat/production-pg"
    check_files_mounted(container, volumes, cfg)
    data = mount_of(container, store["data_directory"])
    assert volumes[data["name"]]["persistentVolumeClaim"] == {"claimName": "postgres-data"} and not data.get("readOnly")
    assert "emptyDir" in volumes[mount_of(container, store["socket_directory"])["name"]]
    assert volumes[mount_of(container, "/dev/shm")["name"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "256Mi"}
    # a chosen backup instead of a moment; no guard when no pod labels are given
    chosen = merged(values_file("disaster-recovery-postgres.yaml"), restore__target_time="", restore__from="20261120-010002F",
                    postgres__differential__pod_labels=None)
    (job,) = kind(render(chosen), "Job")
    assert job_spec(job)["template"]["spec"]["containers"][0]["args"][-2:] == ["--from", "20261120-010002F"]
    assert "affinity" not in job_spec(job)["template"]["spec"]
    assert "scale statefulset postgres --replicas=0" in notes(values_file("disaster-recovery-postgres.yaml"))


def test_metrics_from_values():
    """Pushgateway (production.yaml), a textfile folder on a hostPath or a claim, and the webhook URL as a secret file."""
    values = values_file("production-differential.yaml")
    for textfile, volume in [({"enabled": True, "host_path": "/var/lib/node_exporter/textfile"},
                              {"hostPath": {"path": "/var/lib/node_exporter/textfile", "type": "Directory"}}),
                             ({"enabled": True, "claim_name": "node-exporter-textfile"},
                              {"persistentVolumeClaim": {"claimName": "node-exporter-textfile"}})]:
        objects = render(merged(values, monitoring__textfile=textfile))
        cfg = configs(objects)
        for c in cfg.values():
            assert c["monitoring"] == {"textfile_dir": "/metrics", "webhook_url_file": "/secrets/webhook/url", "webhook_on_success": False}
        (cron,) = kind(objects, "CronJob")
        container, volumes = check_job_hardening(cron, "backup")
        assert {k: v for k, v in volumes["metrics"].items() if k != "name"} == volume
        assert mount_of(container, "/metrics") == {"name": "metrics", "mountPath": "/metrics"}
        assert volumes["webhook"]["secret"] == {"secretName": "lifeboat-webhook", "defaultMode": MODE_0400, "items": [{"key": "url", "path": "url"}]}
        sidecar_volumes = {v["name"]: v for v in yaml.safe_load(sidecar_configmap(objects)["statefulset-patch.yaml"])["spec"]["template"]["spec"]["volumes"]}
        assert {k: v for k, v in sidecar_volumes["lifeboat-metrics"].items() if k != "name"} == volume
        assert sidecar_volumes["lifeboat-webhook"]["secret"]["defaultMode"] == MODE_0440
    on_success = configs(render(merged(values, monitoring__webhook__on_success=True)))["mongodb"]["monitoring"]
    assert on_success["webhook_on_success"] is True
    none = configs(render(merged(values, monitoring={"textfile": {"enabled": False}, "webhook": {"secret": {"name": "", "key": "url"}}})))
    assert "monitoring" not in none["mongodb"]


def test_kubernetes_validate_cli_strict():
    """The rendered files pass the kubernetes-validate CLI with --strict, and a misspelled field fails it."""
    cli = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values_file("production.yaml"), name="prod", namespace="opencrvs")
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, text in enumerate(v for k, v in manifests.items() if not k.endswith("NOTES.txt")):
            files.append(os.path.join(tmp, f"{i}.yaml"))
            with open(files[-1], "w") as f:
                f.write(text)
        for version in KUBE_VERSIONS:
            r = subprocess.run([cli, "--strict", "-k", version, *files], capture_output=True, text=True)
            assert r.returncode == 0, r.stdout + r.stderr
        bad = os.path.join(tmp, "bad.yaml")
        with open(bad, "w") as f:
            f.write(manifests["lifeboat/templates/jobs.yaml"].replace("concurrencyPolicy:", "concurencyPolicy:", 1))
        r = subprocess.run([cli, "--strict", "-k", "1.30", bad], capture_output=True, text=True)
        assert r.returncode != 0 and "concurencyPolicy" in r.stdout + r.stderr, r.stdout + r.stderr


# What a pod mounts, stood in for under a temp folder when the binary runs a rendered configuration.
MOUNTED = ("/secrets/", "/work", "/metrics", "/var/lib/lifeboat", "/var/lib/postgresql/data", "/run/postgresql")


def lifeboat_binary():
    binary = os.environ.get("LIFEBOAT_BIN")
    assert binary, "LIFEBOAT_BIN is not set: run through `cargo test --test deploy_helm`, or set it to a built lifeboat"
    return binary


def stand_ins(tmp, binary):
    """The files and folders the chart mounts, under tmp: secrets, scratch, metrics, PostgreSQL's data."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(tmp, "id")], check=True)
    with open(os.path.join(tmp, "id.pub")) as f:
        host_key = " ".join(f.read().split()[:2])
    with open(os.path.join(tmp, "id")) as f:
        ssh_key = f.read()
    identity = subprocess.run([binary, "keygen"], capture_output=True, text=True, check=True).stdout
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lifeboat@production", "-f", os.path.join(tmp, "signing")], check=True)
    with open(os.path.join(tmp, "signing")) as f:
        signing_key = f.read()
    with open(os.path.join(tmp, "signing.pub")) as f:
        allowed_signers = f'lifeboat@production namespaces="lifeboat" {f.read()}'
    files = {"lifeboat/ssh_key": ssh_key, "lifeboat/known_hosts": f"[127.0.0.1]:1 {host_key}\n",
             "lifeboat/signing_key": signing_key, "lifeboat/allowed_signers": allowed_signers,
             "lifeboat/age_identity": identity, "lifeboat/passphrase": "a passphrase\n",
             "minio/access_key": "minio\n", "minio/secret_key": "minio-secret\n",
             "pgbackrest/passphrase": "a repository passphrase\n", "webhook/url": "http://127.0.0.1:1/hook\n",
             "ssh/ssh_key": ssh_key, "legacy/passphrase": "the original scripts' passphrase"}
    for store in STORES:
        files[f"{store}/password"] = "secret\n"
    for path, text in files.items():
        os.makedirs(os.path.join(tmp, "secrets", os.path.dirname(path)), exist_ok=True)
        with open(os.path.join(tmp, "secrets", path), "w") as f:
            f.write(text)
    for folder in ["work", "metrics", "var/lib/lifeboat", "var/lib/postgresql/data", "run/postgresql"]:
        os.makedirs(os.path.join(tmp, folder), mode=0o700)


def localized(cfg, tmp, server=None):
    """A rendered configuration with what the pod mounts under tmp, and the server at a closed port
    (or at `server`, a URL)."""
    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return tmp + v if isinstance(v, str) and v.startswith(MOUNTED) else v
    out = walk(cfg)
    user, _, rest = out["server"]["url"][len("ssh://"):].partition("@")
    out["server"]["url"] = server or f"ssh://{user}@127.0.0.1:1/{rest.partition('/')[2]}"
    return out


def write_config(tmp, name, cfg):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def test_configs_accepted_by_lifeboat():
    """Every rendered Lifeboat configuration loads in the real binary (LIFEBOAT_BIN; tests/deploy_helm.rs
    sets it): with the mounted files stood in for under a temp folder and the server pointed at a closed
    port, `lifeboat list` gets past the configuration (exit 2) and fails connecting (exit 1)."""
    binary = lifeboat_binary()
    with tempfile.TemporaryDirectory() as tmp:
        stand_ins(tmp, binary)
        checked = []
        for name in VALUES_FILES:
            for store, cfg in configs(render(values_file(name))).items():
                config = write_config(tmp, f"{name}-{store}.yaml", localized(cfg, tmp))
                r = subprocess.run([binary, "--config", config, "list"], capture_output=True, text=True, timeout=120)
                assert r.returncode == 1 and "configuration" not in r.stderr and "127.0.0.1" in r.stderr, \
                    (name, store, r.returncode, r.stderr, cfg)
                checked.append((name, store, cfg["stores"][store]["type"]))
        assert len(checked) == 20, checked
        assert ("production-differential.yaml", "postgres", "differential") in checked
        assert ("disaster-recovery-postgres.yaml", "postgres", "differential") in checked


def test_sidecar_daemon_runs_the_rendered_schedule():
    """The sidecar's command, `lifeboat daemon`, with its rendered configuration: it plans the store's full
    and differential backups in the release's time zone, and stops at once on SIGTERM (exit 0)."""
    binary = lifeboat_binary()
    cfg = configs(render(values_file("production-differential.yaml")))["postgres"]
    with tempfile.TemporaryDirectory() as tmp:
        stand_ins(tmp, binary)
        config = write_config(tmp, "sidecar.yaml", localized(cfg, tmp))
        daemon = subprocess.Popen([binary, "--config", config, "daemon"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines, planned = [], threading.Event()
        wanted = [re.compile(r"postgres: next full backup at \S+ \S+ WAT \(stores.postgres.schedule.full `0 2 \* \* 0`\)"),
                  re.compile(r"postgres: next differential backup at \S+ \S+ WAT \(stores.postgres.schedule.differential `0 2 \* \* 1-6`\)")]

        def read():
            for line in daemon.stderr:
                lines.append(line)
                if all(any(w.search(l) for l in lines) for w in wanted):
                    planned.set()
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert planned.wait(60), "".join(lines)
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(30)
        reader.join(10)
        assert code == 0 and "stopped by SIGTERM with no job running" in "".join(lines), (code, "".join(lines))


def test_sidecar_and_restore_job_on_a_real_postgresql():
    """The sidecar's rendered configuration and archive.sql on a real PostgreSQL 15 and pgBackRest: the
    cluster archives through the pgbackrest.conf Lifeboat writes, and Lifeboat, as the data directory's
    owner seeing it read-only (as the sidecar mounts it), makes a full and a differential backup. Then
    the restore Job's configuration and arguments bring the cluster back, WAL after the last backup included."""
    binary = lifeboat_binary()
    assert os.geteuid() == 0, "this test needs root (a private read-only mount, PostgreSQL's own user)"
    assert os.access(PGBACKREST, os.X_OK), f"{PGBACKREST} is missing: run scripts/install-deps"
    pg_bin = "/usr/lib/postgresql/15/bin"
    tmp = tempfile.mkdtemp(prefix="lifeboat-sidecar-", dir="/tmp")
    os.chmod(tmp, 0o755)
    as_postgres = ["runuser", "-u", "postgres", "--"]
    pg = os.path.join(tmp, "var/lib/postgresql/data")
    # pgBackRest from PATH, as in the image; runuser and mount from sbin
    path = dict(os.environ, PATH=f"{tmp}/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    try:
        stand_ins(tmp, binary)
        os.makedirs(os.path.join(tmp, "bin"))
        # as the image has them, whatever LIFEBOAT_BIN's file is called
        for source, name in [(binary, "lifeboat"), (PGBACKREST, "pgbackrest")]:
            target = os.path.join(tmp, "bin", name)
            with open(source, "rb") as src, open(target, "wb") as dst:
                dst.write(src.read())
            os.chmod(target, 0o755)
        os.makedirs(os.path.join(tmp, "server"))
        values = merged(values_file("production-differential.yaml"),
                        postgres__differential__postgres_pgbackrest=os.path.join(tmp, "bin", "pgbackrest"))
        objects = render(values)
        cfg = localized(configs(objects)["postgres"], tmp, server=f"file://{tmp}/server")
        port = free_port()
        cfg["stores"]["postgres"]["url"] = f"postgres://postgres@127.0.0.1:{port}/postgres"
        config = write_config(tmp, "sidecar.yaml", cfg)
        subprocess.run(["chown", "-R", "postgres:postgres", tmp], check=True)
        os.rmdir(pg)
        subprocess.run(as_postgres + [f"{pg_bin}/initdb", "-D", pg, "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
        with open(os.path.join(pg, "postgresql.conf"), "a") as f:
            f.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{tmp}/run/postgresql'\n")
        pg_ctl = as_postgres + [f"{pg_bin}/pg_ctl", "-D", pg, "-l", os.path.join(tmp, "postgresql.log"), "-w"]
        subprocess.run(pg_ctl + ["start"], check=True, capture_output=True)
        # the operator's step: archive.sql as rendered (its one path moved under tmp), then a restart
        sql = sidecar_configmap(objects)["archive.sql"].replace("=/var/lib/lifeboat/", f"={tmp}/var/lib/lifeboat/")
        psql = as_postgres + [f"{pg_bin}/psql", "-h", f"{tmp}/run/postgresql", "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
        subprocess.run(psql + ["-f", "-"], input=sql, check=True, capture_output=True, text=True)  # as NOTES.txt does
        subprocess.run(pg_ctl + ["restart"], check=True, capture_output=True)
        shown = subprocess.run(psql + ["-Atc", "SHOW archive_command"], check=True, capture_output=True, text=True).stdout.strip()
        conf = sidecar_configmap(objects)["postgresql.conf"].replace("=/var/lib/lifeboat/", f"={tmp}/var/lib/lifeboat/")
        assert f"archive_command = '{shown}'" in conf.splitlines(), (shown, conf)

        def sidecar(*args):
            """lifeboat as PostgreSQL's user, in a mount namespace where the data directory is read-only."""
            script = f"mount --bind {pg} {pg} && mount -o remount,bind,ro {pg} && exec \"$@\""
            return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh"] + as_postgres +
                                  [f"{tmp}/bin/lifeboat", "--config", config, *args], capture_output=True, text=True, env=path, timeout=300)
        for kind_ in ["full", "diff"]:
            r = sidecar("backup", "--store", "postgres", "--type", kind_)
            assert r.returncode == 0 and "postgres: backup " in r.stderr, (kind_, r.stderr)
            subprocess.run(psql + ["-c", f"CREATE TABLE after_{kind_} AS SELECT 1 AS x"], check=True, capture_output=True)
        r = sidecar("--json", "list")
        assert r.returncode == 0, r.stderr
        kinds = [b["type"] for b in json.loads(r.stdout) if b["store"] == "postgres"]
        assert sorted(kinds) == ["diff", "full"], r.stdout
        # what pgBackRest writes next to PostgreSQL: the configuration archive_command names, PostgreSQL's user's alone
        pgbr = os.path.join(tmp, "var/lib/lifeboat/pgbackrest")
        assert oct(os.stat(pgbr).st_mode & 0o777) == "0o700" and oct(os.stat(f"{pgbr}/pgbackrest.conf").st_mode & 0o777) == "0o600"

        # the table made after the differential backup is only in archived WAL: `pgbackrest check` switches
        # WAL and waits until PostgreSQL's archive_command has pushed it
        subprocess.run(as_postgres + [f"{tmp}/bin/pgbackrest", f"--config={pgbr}/pgbackrest.conf", "--stanza=main", "check"],
                       check=True, capture_output=True, env=path)

        # The restore Job's rendered configuration, as PostgreSQL's user, on the stopped cluster (its
        # own empty pgBackRest folder): the newest state, archived WAL included, and no archiving after
        subprocess.run(pg_ctl + ["stop"], check=True, capture_output=True)
        subprocess.run(["rm", "-rf", pgbr], check=True)
        dr = merged(values_file("disaster-recovery-postgres.yaml"), restore__target_time="", postgres__config__bin_dir=pg_bin)
        restore_cfg = localized(configs(render(dr, name="dr"))["postgres"], tmp, server=f"file://{tmp}/server")
        restore_cfg["stores"]["postgres"]["url"] = cfg["stores"]["postgres"]["url"]
        restore_config = write_config(tmp, "restore.yaml", restore_cfg)
        subprocess.run(["chown", "postgres", restore_config], check=True)
        (job,) = kind(render(dr, name="dr"), "Job")
        args = job_spec(job)["template"]["spec"]["containers"][0]["args"]
        assert args[:2] == ["--config", "/etc/lifeboat/lifeboat.yaml"]
        r = subprocess.run(as_postgres + [f"{tmp}/bin/lifeboat", "--config", restore_config] + args[2:], capture_output=True, text=True,
                           env=path, timeout=300)
        assert r.returncode == 0 and "postgres: restore " in r.stderr, r.stderr
        for table in ["after_full", "after_diff"]:
            assert subprocess.run(psql + ["-Atc", f"SELECT count(*) FROM {table}"], capture_output=True, text=True).stdout.strip() == "1", table
        assert subprocess.run(psql + ["-Atc", "SHOW archive_mode"], capture_output=True, text=True).stdout.strip() == "off"
    finally:
        if os.path.exists(os.path.join(pg, "postmaster.pid")):
            subprocess.run(as_postgres + [f"{pg_bin}/pg_ctl", "-D", pg, "-m", "immediate", "stop"], capture_output=True)
        subprocess.run(["rm", "-rf", tmp], check=True)


def free_port():
    """A TCP port the kernel says is free (it skips the ports scripts/test reserves)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hook(http.server.BaseHTTPRequestHandler):
    bodies = []

    def do_POST(self):  # noqa: N802 - the http.server name
        Hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_rendered_monitoring_reaches_the_textfile_and_webhook():
    """A job failing with the rendered monitoring block (textfile folder and webhook URL file, as
    mounted) writes its metrics file there and posts to the webhook."""
    binary = lifeboat_binary()
    cfg = configs(render(values_file("production-differential.yaml")))["mongodb"]
    assert cfg["monitoring"] == {"textfile_dir": "/metrics", "webhook_url_file": "/secrets/webhook/url", "webhook_on_success": False}
    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stand_ins(tmp, binary)
            with open(os.path.join(tmp, "secrets", "webhook", "url"), "w") as f:
                f.write(f"http://127.0.0.1:{server.server_port}/hook\n")
            os.makedirs(os.path.join(tmp, "server"))
            # a reachable server (a folder) and a MongoDB that is not there: the store's job fails
            local = localized(cfg, tmp, server=f"file://{tmp}/server")
            local["stores"]["mongodb"]["url"] = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=2000&connectTimeoutMS=2000"
            config = write_config(tmp, "mongodb.yaml", local)
            r = subprocess.run([binary, "--config", config, "backup", "--store", "mongodb"], capture_output=True, text=True, timeout=120)
            assert r.returncode == 1, (r.returncode, r.stderr)
            with open(os.path.join(tmp, "metrics", "lifeboat_backup_mongodb.prom")) as f:
                metrics = f.read()
            assert 'lifeboat_last_result{role="backup",store="mongodb"} 0' in metrics, metrics
    finally:
        server.shutdown()
    assert [(b["role"], b["result"], [s["store"] for s in b["stores"]]) for b in Hook.bodies] == [("backup", "failed", ["mongodb"])], Hook.bodies


# Taking over from OpenCRVS's original scripts (charts/dependencies): the Secrets such a deployment
# already has, as the original chart's README has them created, and the values that reach them.
ORIGINAL_SSH_SECRET = "backup-server-ssh-credentials"     # backup.backup_server_secret: host, user, ssh_key
ORIGINAL_BACKUP_KEY_SECRET = "backup-encryption-secret"   # backup.backup_encryption_secret: backup_encryption_key
ORIGINAL_RESTORE_KEY_SECRET = "restore-encryption-secret"  # restore.backup_encryption_secret: the same key, copied


def check_original_ssh_key(volumes, secret_mode=MODE_0400):
    """The SSH key comes alone from the original Secret, as it is: its host and user are not mounted."""
    assert volumes["ssh-key"]["secret"] == {"secretName": ORIGINAL_SSH_SECRET, "defaultMode": secret_mode,
                                            "items": [{"key": "ssh_key", "path": "ssh_key"}]}, volumes["ssh-key"]
    assert "ssh_key" not in {i["path"] for i in volumes["server-secrets"]["secret"]["items"]}


def legacy_volume(secret_name):
    return {"secretName": secret_name, "defaultMode": MODE_0400, "items": [{"key": "backup_encryption_key", "path": "passphrase"}]}


def test_takeover_production():
    """Production with the original Secrets: the SSH key of backup-server-ssh-credentials in every job, the
    host and user from the values; the nightly backups never hold the original passphrase."""
    objects = render(values_file("takeover-production.yaml"))
    crons = {o["metadata"]["labels"]["lifeboat/store"]: o for o in kind(objects, "CronJob")}
    assert sorted(crons) == sorted(STORES)
    assert kind(objects, "Secret") == [], "the chart creates no Secret: the original ones and lifeboat-backup-server exist"
    cfg = configs(objects)
    for store, cron in crons.items():
        assert cron["spec"]["schedule"] == "0 1 * * *"
        container, volumes = check_job_hardening(cron, "backup")
        check_original_ssh_key(volumes)
        assert volumes["server-secrets"]["secret"]["secretName"] == "lifeboat-backup-server"
        assert "legacy" not in volumes, f"{store}: a nightly backup never reads the original backups"
        c = cfg[store]
        assert "legacy" not in c and ("work_dir" in c) == (store == "influxdb"), c
        assert c["server"] == {"url": "ssh://backup@backup.opencrvs.example.org:22/home/backup/production",
                               "ssh_key_file": "/secrets/ssh/ssh_key", "known_hosts_file": "/secrets/lifeboat/known_hosts",
                               "timeout": "60s"}, c["server"]
        check_files_mounted(container, volumes, c)
    assert cfg["minio"]["stores"]["minio"]["endpoint"] == "http://minio:3535"
    # with inline keys instead of existing_secret, the chart's own Secret holds no SSH key
    inline = merged(values_file("takeover-production.yaml"),
                    backup__secrets={"ssh_key_secret": {"name": ORIGINAL_SSH_SECRET, "key": "ssh_key"},
                                     "known_hosts": "backup.opencrvs.example.org ssh-ed25519 AAAA", "signing_key": "SIGNING"})
    (secret,) = kind(render(inline), "Secret")
    assert set(secret["stringData"]) == {"known_hosts", "signing_key"}, secret["stringData"].keys()


def test_takeover_staging():
    """Staging with the original Secrets: restores of dump stores read the original backups too, with the
    passphrase of restore-encryption-secret as a 0400 file; a differential store never gets it."""
    objects = render(values_file("takeover-staging.yaml"), name="staging")
    crons = {o["metadata"]["labels"]["lifeboat/store"]: o for o in kind(objects, "CronJob")}
    assert sorted(crons) == sorted(STORES)
    (secret,) = kind(objects, "Secret")
    assert set(secret["stringData"]) == {"known_hosts", "allowed_signers", "age_identity"}, secret["stringData"].keys()
    cfg = configs(objects)
    for store, cron in crons.items():
        assert cron["spec"]["schedule"] == "0 0 * * *"
        container, volumes = check_job_hardening(cron, "restore")
        check_original_ssh_key(volumes)
        assert volumes["legacy"]["secret"] == legacy_volume(ORIGINAL_RESTORE_KEY_SECRET), volumes["legacy"]
        assert mount_of(container, "/secrets/legacy/passphrase") == {"name": "legacy", "mountPath": "/secrets/legacy", "readOnly": True}
        assert cfg[store]["legacy"] == {"passphrase_file": "/secrets/legacy/passphrase"}
        check_files_mounted(container, volumes, cfg[store])
    # a MinIO mirror keeps its own runs: no passphrase for it
    mirror = render(merged(values_file("takeover-staging.yaml"), minio__type="differential"), name="staging")
    (minio,) = [o for o in kind(mirror, "CronJob") if o["metadata"]["labels"]["lifeboat/store"] == "minio"]
    assert "legacy" not in {v["name"] for v in job_spec(minio)["template"]["spec"]["volumes"]}
    assert "legacy" not in configs(mirror)["minio"] and "legacy" in configs(mirror)["mongodb"]
    # no passphrase Secret named: the original backups are listed, never read, and nothing is mounted
    none = render(merged(values_file("takeover-staging.yaml"), legacy__passphrase_secret={"name": "", "key": "backup_encryption_key"}), name="staging")
    assert all("legacy" not in c for c in configs(none).values())
    assert all("legacy" not in {v["name"] for v in job_spec(j)["template"]["spec"]["volumes"]} for j in kind(none, "CronJob"))


def doc_example(name):
    """A values file shown in docs/switching-values.md, after its `<!-- example: NAME -->` marker."""
    with open(os.path.join(ROOT, "docs", "switching-values.md")) as f:
        text = f.read()
    found = re.search(r"<!-- example: " + name + r" -->\n```yaml\n(.*?)```", text, re.S)
    assert found, f"docs/switching-values.md has no example {name}"
    return helm.values_from_yaml(found.group(1))


def test_switching_doc_examples():
    """The example values of docs/switching-values.md render, lint clean, and take the original Secrets
    as the page says: the SSH key of backup-server-ssh-credentials on both sides, the passphrase of
    restore-encryption-secret in staging's restores, none in production's backups."""
    prod, staging = doc_example("production"), doc_example("staging")
    for values in [prod, staging]:
        report = helm.lint(CHART, values, strict=True, kube_version="v1.30.0")
        assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report
    backups = render(prod)
    for cron in kind(backups, "CronJob"):
        _, volumes = check_job_hardening(cron, "backup")
        check_original_ssh_key(volumes)
        assert "legacy" not in volumes
    assert configs(backups)["minio"]["stores"]["minio"]["endpoint"] == "http://minio:3535"
    restores = render(staging, name="staging")
    for cron in kind(restores, "CronJob"):
        _, volumes = check_job_hardening(cron, "restore")
        check_original_ssh_key(volumes)
        assert volumes["legacy"]["secret"] == legacy_volume(ORIGINAL_RESTORE_KEY_SECRET)
    assert sorted(j["metadata"]["labels"]["lifeboat/store"] for j in kind(render(merged(prod, backup__cronjob=False, legacy__import=True),
                                                                                  name="lifeboat-import"), "Job")) == sorted(STORES)


def import_values(base="takeover-production.yaml", **changes):
    return merged(values_file(base), backup__cronjob=False, legacy__import=True, **changes)


def test_takeover_import_jobs():
    """legacy.import: one-off Jobs running `lifeboat import --store S` for each dump store, with the original
    passphrase and scratch space; a differential store has none, and its sidecar is not rendered."""
    objects = render(import_values(), name="lifeboat-import")
    assert kind(objects, "CronJob") == []
    jobs = {o["metadata"]["labels"]["lifeboat/store"]: o for o in kind(objects, "Job")}
    assert sorted(jobs) == sorted(STORES)
    cfg = configs(objects)
    for store, job in jobs.items():
        assert job["metadata"]["name"] == f"lifeboat-import-backup-{store}-import"
        pod = job_spec(job)["template"]["spec"]
        (container,) = pod["containers"]
        check_container_hardening(container)
        assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
        assert container["args"] == ["--config", "/etc/lifeboat/lifeboat.yaml", "import", "--store", store]
        volumes = {v["name"]: v for v in pod["volumes"]}
        check_original_ssh_key(volumes)
        assert volumes["legacy"]["secret"] == legacy_volume(ORIGINAL_BACKUP_KEY_SECRET)
        assert volumes["work"]["emptyDir"] == {"sizeLimit": "20Gi"}
        assert cfg[store]["legacy"] == {"passphrase_file": "/secrets/legacy/passphrase"} and cfg[store]["work_dir"] == "/work"
        # it signs what it writes with production's key, and encrypts to the age recipients
        assert cfg[store]["signing"] == {"key_file": "/secrets/lifeboat/signing_key"} and "recipients" in cfg[store]["encryption"]
        check_files_mounted(container, volumes, cfg[store])
    text = notes(import_values(), name="lifeboat-import")
    assert "minio: lifeboat import --store minio" in text and "original files stay" in text, text
    assert "at \"" not in text, "one-off Jobs have no schedule"
    sized = render(import_values(legacy__import_work_dir_size="80Gi"), name="lifeboat-import")
    assert {job_spec(j)["template"]["spec"]["volumes"][-1]["emptyDir"]["sizeLimit"] for j in kind(sized, "Job")} == {"80Gi"}
    # PostgreSQL differential (the sidecar) and a MinIO mirror: nothing to import, no sidecar patch
    diff = render(import_values(postgres__type="differential", postgres__config={"url": "postgres://postgres@127.0.0.1:5432/postgres"},
                                postgres__differential={"passphrase_secret": {"name": ORIGINAL_BACKUP_KEY_SECRET, "key": "backup_encryption_key"}},
                                minio__type="differential"), name="lifeboat-import")
    assert sorted(j["metadata"]["labels"]["lifeboat/store"] for j in kind(diff, "Job")) == ["influxdb", "mongodb"]
    assert not [o for o in kind(diff, "ConfigMap") if o["metadata"]["name"].endswith("-postgres-sidecar")]


def test_takeover_refusals():
    prod, staging = values_file("takeover-production.yaml"), values_file("takeover-staging.yaml")
    for values, needle in [
        (merged(prod, backup__secrets__ssh_key="-----BEGIN OPENSSH PRIVATE KEY-----"),
         "backup.secrets.ssh_key and backup.secrets.ssh_key_secret.name are both set"),
        (merged(prod, backup__server__host=""),
         "kubectl get secret backup-server-ssh-credentials -o jsonpath='{.data.host}' | base64 -d"),
        (merged(prod, backup__secrets={"known_hosts": "h ssh-ed25519 AAAA", "signing_key": "S"}),
         "backup.secrets: no SSH key: set backup.secrets.ssh_key_secret.name"),
        (merged(staging, restore__secrets__known_hosts=""), "restore.secrets.known_hosts is empty"),
        (merged(prod, legacy__import=True), "legacy.import is true but backup.cronjob is true"),
        (merged(staging, legacy__import=True, restore__cronjob=False), "legacy.import is true but this release is a restore"),
        (import_values(legacy__passphrase_secret={"name": "", "key": "backup_encryption_key"}), "legacy.passphrase_secret.name is empty"),
        (import_values(postgres__enabled=False, mongodb__enabled=False, influxdb__enabled=False, minio__type="differential"),
         "no enabled store is of type dump"),
    ]:
        assert needle in refusal(values), (needle, refusal(values))


class Skip(Exception):
    """A test that cannot run with this LIFEBOAT_BIN (reported, not counted as passed)."""


class PrivateSshd:
    """A plain OpenSSH sshd on a free loopback port, its own ed25519 host key, key login for root
    with the given public keys, SFTP as OpenSSH ships it; stopped by its pid."""

    def __init__(self, tmp, authorized):
        self.dir = os.path.join(tmp, "sshd")
        os.makedirs(self.dir, mode=0o700)
        os.makedirs("/run/sshd", exist_ok=True)
        self.port = free_port()
        self.host_key = os.path.join(self.dir, "host_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.host_key], check=True)
        with open(os.path.join(self.dir, "authorized_keys"), "w") as f:
            f.write(authorized)
        config = os.path.join(self.dir, "sshd_config")
        with open(config, "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile none\n"
                    f"AuthorizedKeysFile {self.dir}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n")
        self.log = os.path.join(self.dir, "sshd.log")
        self.process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", config, "-E", self.log])
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert self.process.poll() is None, open(self.log).read()
            threading.Event().wait(0.1)
        raise AssertionError(f"sshd did not listen on {self.port}")

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


def original_backup(server_dir, store, day, passphrase, files):
    """A backup made the original scripts' way (files/<store>/backup.sh): tar czf of the folder, then
    openssl enc -aes-256-cbc -pbkdf2 -salt -pass env:ENCRYPT_PASS, as <dir>/<date>/<store>_backup_<date>.tar.gz.enc."""
    with tempfile.TemporaryDirectory() as folder:
        for path, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(folder, path)), exist_ok=True)
            with open(os.path.join(folder, path), "w") as f:
                f.write(text)
        archive = subprocess.run(["tar", "czf", "-", "-C", folder, "."], check=True, capture_output=True).stdout
    os.makedirs(os.path.join(server_dir, day), exist_ok=True)
    target = os.path.join(server_dir, day, f"{store}_backup_{day}.tar.gz.enc")
    subprocess.run(["openssl", "enc", "-aes-256-cbc", "-pbkdf2", "-salt", "-out", target, "-pass", "env:ENCRYPT_PASS"],
                   input=archive, check=True, env=dict(os.environ, ENCRYPT_PASS=passphrase))


def run_pod(obj, objects, secrets, root, binary, args=None):
    """Runs the Lifeboat container of a rendered Job or CronJob as kubelet would start it: each secret
    volume's items written from `secrets` (name: {key: value}; a missing Secret or key fails, as the pod
    would not start), the ConfigMap's item from the rendered ConfigMap, emptyDirs made, all under root;
    then the container's arguments (or `args` after --config)."""
    pod = job_spec(obj)["template"]["spec"]
    (container,) = pod["containers"]
    maps = {o["metadata"]["name"]: o["data"] for o in kind(objects, "ConfigMap")}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config = None
    for v in pod["volumes"]:
        folder = root + mounts[v["name"]]
        os.makedirs(folder, exist_ok=True)
        if "secret" in v:
            data = secrets.get(v["secret"]["secretName"])
            assert data is not None, f"the pod would not start: no Secret {v['secret']['secretName']}"
            for item in v["secret"]["items"]:
                assert item["key"] in data, f"the pod would not start: Secret {v['secret']['secretName']} has no key {item['key']}"
                with open(os.path.join(folder, item["path"]), "w") as f:
                    f.write(data[item["key"]])
                os.chmod(os.path.join(folder, item["path"]), v["secret"]["defaultMode"])
        elif "configMap" in v:
            (item,) = v["configMap"]["items"]
            cfg = yaml.safe_load(maps[v["configMap"]["name"]][item["key"]])
            config = write_config(folder, item["path"], localized(cfg, root, server=cfg["server"]["url"]))
    assert container["args"][:2] == ["--config", "/etc/lifeboat/lifeboat.yaml"] and config
    command = [binary, "--config", config] + (args if args is not None else container["args"][2:])
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def keyscan(port):
    """known_hosts for the server, the way docs/switching-values.md has it taken: ssh-keyscan, then the
    fingerprint compared with the one read on the server itself."""
    lines = subprocess.run(["ssh-keyscan", "-p", str(port), "-t", "ed25519", "127.0.0.1"], capture_output=True, text=True, check=True).stdout
    return lines


def fingerprints(text):
    r = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=text, capture_output=True, text=True, check=True)
    return {line.split()[1] for line in r.stdout.splitlines()}


class Takeover:
    """A backup server holding the original scripts' backups, reached with the original Secrets."""

    def __init__(self, tmp, binary):
        self.tmp, self.binary = tmp, binary
        # the original README: kubectl create secret generic backup-server-ssh-credentials
        #   --from-literal=user=... --from-literal=host=... --from-file=ssh_key=<backup_id_rsa key file>
        key = os.path.join(tmp, "backup_id_rsa")
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-m", "PEM", "-N", "", "-f", key], check=True)
        with open(key) as f:
            ssh_key = f.read()
        assert ssh_key.startswith("-----BEGIN RSA PRIVATE KEY-----")
        with open(key + ".pub") as f:
            self.sshd = PrivateSshd(tmp, f.read())
        # backup-encryption-key.yaml: randAlphaNum 32, no newline; staging's is a copy of production's
        self.passphrase = "k3Yq8ZmW2vT6pR9sLx4cN7bH1dF5gJ0a"
        self.secrets = {
            ORIGINAL_SSH_SECRET: {"host": "127.0.0.1", "user": "root", "ssh_key": ssh_key},
            ORIGINAL_BACKUP_KEY_SECRET: {"backup_encryption_key": self.passphrase},
            ORIGINAL_RESTORE_KEY_SECRET: {"backup_encryption_key": self.passphrase},
            "postgres-admin-user": {"POSTGRES_PASSWORD": "postgres"},
            "minio-opencrvs-users": {"MINIO_ROOT_USER": "minio", "MINIO_ROOT_PASSWORD": "minio-secret"},
        }
        self.dir = os.path.join(tmp, "home", "backup", "production")
        original_backup(self.dir, "minio", "2026-01-10", self.passphrase,
                        {"ocrvs/a.txt": "one\n", "ocrvs/b/c.txt": "two\n", "ocrvs-static/d.txt": "three\n"})
        original_backup(self.dir, "mongo", "2026-01-11", self.passphrase, {"hearth-dev.gz": "not read by these tests"})
        # Lifeboat's own keys, made once and kept in Secrets of their own
        self.known_hosts = keyscan(self.sshd.port)
        with open(self.sshd.host_key + ".pub") as f:
            assert fingerprints(self.known_hosts) == fingerprints(f.read()), "ssh-keyscan answered with another host key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lifeboat@production", "-f", os.path.join(tmp, "signing")], check=True)
        with open(os.path.join(tmp, "signing")) as f:
            signing_key = f.read()
        with open(os.path.join(tmp, "signing.pub")) as f:
            allowed_signers = f'lifeboat@production namespaces="lifeboat" {f.read()}'
        r = subprocess.run([binary, "keygen"], capture_output=True, text=True, check=True)
        identity, recipient = r.stdout, re.search(r"age1[0-9a-z]+", r.stderr).group(0)
        self.secrets["lifeboat-backup-server"] = {"known_hosts": self.known_hosts, "signing_key": signing_key}
        # host and user as the values give them: read from the original Secret by the operator
        original = self.secrets[ORIGINAL_SSH_SECRET]
        server = {"host": original["host"], "user": original["user"], "port": self.sshd.port, "backup_server_dir": self.dir}
        self.production = merged(values_file("takeover-production.yaml"), backup__server=server, backup__encryption__recipients=[recipient])
        self.staging = merged(values_file("takeover-staging.yaml"), restore__server=server, restore__secrets__known_hosts=self.known_hosts,
                              restore__secrets__age_identity=identity, restore__secrets__allowed_signers=allowed_signers)

    def render(self, values, name):
        """Rendered objects; the Secrets the chart creates join the existing ones (as kubectl apply would)."""
        objects = render(values, name=name)
        for secret in kind(objects, "Secret"):
            self.secrets[secret["metadata"]["name"]] = secret["stringData"]
        return objects

    def run(self, objects, store, args=None, kind_="CronJob"):
        (obj,) = [o for o in kind(objects, kind_) if o["metadata"]["labels"]["lifeboat/store"] == store]
        root = os.path.join(self.tmp, "pods", obj["metadata"]["name"])
        return run_pod(obj, objects, self.secrets, root, self.binary, args)


def test_original_secrets_over_real_ssh():
    """The original Secrets as they are (an RSA key in PEM, as the original README has it made), host and
    user in the values, known_hosts from ssh-keyscan: every rendered job of production and staging lists,
    over a real sshd, the original scripts' backups (made with the real tar and openssl); a changed host
    key is refused (the original scripts connected with StrictHostKeyChecking=no)."""
    binary = lifeboat_binary()
    assert os.geteuid() == 0, "this test needs root (sshd)"
    with tempfile.TemporaryDirectory() as tmp:
        t = Takeover(tmp, binary)
        try:
            for role, values in [("backup", t.production), ("restore", t.staging)]:
                objects = t.render(values, name=f"takeover-{role}")
                for store in STORES:
                    r = t.run(objects, store, ["--json", "list"])
                    assert r.returncode == 0, (role, store, r.stderr)
                    legacy = {(b["store"], b["date"]) for b in json.loads(r.stdout) if b.get("made_by_original_scripts")}
                    assert legacy == {("minio", "2026-01-10"), ("mongodb", "2026-01-11")}, (role, store, r.stdout)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(tmp, "other")], check=True)
            with open(os.path.join(tmp, "other.pub")) as f:
                wrong = f"[127.0.0.1]:{t.sshd.port} {' '.join(f.read().split()[:2])}\n"
            t.secrets["lifeboat-backup-server"]["known_hosts"] = wrong
            r = t.run(t.render(t.production, name="takeover-backup"), "mongodb", ["list"])
            assert r.returncode == 1 and "host key" in r.stderr, (r.returncode, r.stderr)
        finally:
            t.sshd.stop()


def test_import_job_over_real_ssh():
    """The rendered import Job (legacy.import) over a real sshd with the original Secrets: the original
    MinIO backup is decrypted with backup-encryption-secret's key and written as a signed run of its date;
    the nightly backup's configuration lists it, staging's verifies it deeply with the age identity, and a
    second import passes it over."""
    binary = lifeboat_binary()
    assert os.geteuid() == 0, "this test needs root (sshd)"
    if "import" not in subprocess.run([binary, "--help"], capture_output=True, text=True).stdout.split("Options:")[0]:
        raise Skip(f"{binary} has no import command (built before it)")
    with tempfile.TemporaryDirectory() as tmp:
        t = Takeover(tmp, binary)
        try:
            importing = t.render(merged(t.production, backup__cronjob=False, legacy__import=True), name="lifeboat-import")
            r = t.run(importing, "minio", kind_="Job")
            assert r.returncode == 0 and "minio: imported 2026-01-10/minio_backup_2026-01-10.tar.gz.enc as 2026-01-10" in r.stderr, r.stderr
            nightly = t.render(t.production, name="takeover-backup")
            r = t.run(nightly, "minio", ["--json", "list"])
            runs = [b for b in json.loads(r.stdout) if b["store"] == "minio" and b["type"] == "dump"]
            assert r.returncode == 0 and [(b["id"], b["complete"]) for b in runs] == [("2026-01-10", True)] and runs[0]["signed_by"], r.stdout
            r = t.run(t.render(t.staging, name="takeover-restore"), "minio", ["verify", "--deep", "--from", "2026-01-10"])
            assert r.returncode == 0, r.stderr
            r = t.run(importing, "minio", kind_="Job")
            assert r.returncode == 0 and "already imported" in r.stdout + r.stderr, (r.stdout, r.stderr)
            # with another passphrase the file cannot be read: the import fails and writes nothing
            t.secrets[ORIGINAL_BACKUP_KEY_SECRET]["backup_encryption_key"] = "not the original passphrase"
            original_backup(t.dir, "minio", "2026-01-12", t.passphrase, {"ocrvs/e.txt": "four\n"})
            r = t.run(importing, "minio", kind_="Job")
            assert r.returncode == 1 and "2026-01-12" in r.stdout + r.stderr, (r.returncode, r.stdout, r.stderr)
            assert not os.path.exists(os.path.join(t.dir, "2026-01-12", "minio")), os.listdir(os.path.join(t.dir, "2026-01-12"))
        finally:
            t.sshd.stop()


def main():
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    failed = skipped = 0
    for name, test in tests:
        try:
            test()
            print(f"ok   {name}")
        except Skip as e:
            skipped += 1
            print(f"skip {name}: {e}")
        except Exception:  # noqa: BLE001 - every failure is reported, then the run fails
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{len(tests) - failed - skipped} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
