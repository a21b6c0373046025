#!/usr/bin/env python3
"""Tests of the Helm chart deploy/helm/lifeboat, with the real Helm library (helm-python-sdk) and
Kubernetes' own schemas (kubernetes-validate --strict). No cluster is needed.

Run from the repository root: $HOME/.cache/lifeboat-tools/venv/bin/python tests/helm/test_chart.py
(scripts/install-deps installs both packages into that venv). Exits 0 when every test passes.
"""

import copy
import os
import subprocess
import sys
import tempfile
import traceback

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "deploy", "helm", "lifeboat")
HERE = os.path.join(ROOT, "tests", "helm")
KUBE_VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]
STORES = ["postgres", "mongodb", "influxdb", "minio"]
MODE_0400 = 256


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


def render(values, name="prod"):
    """Every rendered object, as dicts; each validated against Kubernetes' strict schemas."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=name, namespace="opencrvs")
    objects = []
    for path, text in manifests.items():
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__template"] = path
                objects.append(doc)
    for obj in objects:
        plain = {k: v for k, v in obj.items() if k != "__template"}
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(plain, version, strict=True)
    return objects


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
    """The Lifeboat configuration of each store, parsed, from the one ConfigMap."""
    (cm,) = kind(objects, "ConfigMap")
    return {key[: -len(".yaml")]: yaml.safe_load(text) for key, text in cm["data"].items()}


def check_job_hardening(obj, role):
    """What every job must have, whatever its store or role."""
    if obj["kind"] == "CronJob":
        assert obj["spec"]["concurrencyPolicy"] == "Forbid" and obj["spec"]["timeZone"], obj["metadata"]["name"]
    spec = job_spec(obj)
    assert spec["backoffLimit"] >= 0 and spec["activeDeadlineSeconds"] > 0, obj["metadata"]["name"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["args"][:2] == ["--config", "/etc/lifeboat/lifeboat.yaml"] and c["args"][2] == role
    store = obj["metadata"]["labels"]["lifeboat/store"]
    assert c["args"][3:5] == ["--store", store]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert set(volumes) == set(mounts), (volumes.keys(), mounts.keys())
    for name, v in volumes.items():
        if "secret" in v:
            assert v["secret"]["defaultMode"] == MODE_0400, f"{name} is not mounted with mode 0400"
            assert mounts[name]["readOnly"] is True
    assert volumes["config"]["configMap"]["items"] == [{"key": f"{store}.yaml", "path": "lifeboat.yaml"}]
    server_files = {i["path"] for i in volumes["server-secrets"]["secret"]["items"]}
    assert {"ssh_key", "known_hosts"} <= server_files
    # scratch space only where a restore (or influxd's backup folder) needs it
    needs_scratch = role == "restore" or store == "influxdb"
    assert ("work" in volumes) == needs_scratch, obj["metadata"]["name"]
    return c, volumes


def test_lint_strict():
    for values in [None, values_file("production.yaml"), values_file("staging.yaml"), values_file("manual-restore.yaml")]:
        report = helm.lint(CHART, values, strict=True, kube_version="v1.30.0")
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_defaults_render_nothing():
    assert render({}) == []


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
        assert {i["path"] for i in volumes["server-secrets"]["secret"]["items"]} == {"ssh_key", "known_hosts"}
    args = {n: c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] for n, c in crons.items()}
    assert args["prod-lifeboat-backup-postgres"][2:] == ["backup", "--store", "postgres"]
    pg_pod = crons["prod-lifeboat-backup-postgres"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pg_secret = {v["name"]: v for v in pg_pod["volumes"]}["store-secrets"]["secret"]
    assert pg_secret["secretName"] == "postgres-admin-user"
    assert pg_secret["items"] == [{"key": "POSTGRES_PASSWORD", "path": "password"}]
    # the chart creates no Secret when an existing one is named
    assert kind(objects, "Secret") == []

    cfg = configs(objects)
    assert sorted(cfg) == sorted(STORES)
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
        assert {i["path"] for i in volumes["server-secrets"]["secret"]["items"]} == {"ssh_key", "known_hosts", "age_identity"}
        assert volumes["work"]["emptyDir"]["sizeLimit"] == "20Gi"
    (secret,) = kind(objects, "Secret")
    assert secret["metadata"]["name"] == volumes["server-secrets"]["secret"]["secretName"]
    assert set(secret["stringData"]) == {"ssh_key", "known_hosts", "age_identity"}
    for store, c in configs(objects).items():
        assert c["role"] == "restore" and list(c["stores"]) == [store]
        assert c["encryption"] == {"identity_file": "/secrets/lifeboat/age_identity"}
        assert c["server"]["url"] == "ssh://lifeboat-restore@backup.example.org:22/srv/lifeboat/production"
        assert c["work_dir"] == "/work" and "monitoring" not in c


def test_manual_restore():
    objects = render(values_file("manual-restore.yaml"), name="dr")
    assert kind(objects, "CronJob") == []
    jobs = {o["metadata"]["labels"]["lifeboat/store"]: o for o in kind(objects, "Job")}
    assert sorted(jobs) == ["mongodb", "postgres"]
    for store, j in jobs.items():
        container, volumes = check_job_hardening(j, "restore")
        assert container["args"][2:] == ["restore", "--store", store, "--yes", "--from", "2026-11-20"]
        assert {i["path"] for i in volumes["server-secrets"]["secret"]["items"]} == {"ssh_key", "known_hosts", "passphrase"}
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
    inline = merged(values_file("production.yaml"), backup__secrets={"ssh_key": "KEY", "known_hosts": "host ssh-ed25519 AAAA"})
    (secret,) = kind(render(inline), "Secret")
    assert set(secret["stringData"]) == {"ssh_key", "known_hosts"}, secret["stringData"].keys()
    assert "'age_identity' not allowed" in refusal(merged(inline, backup__secrets__age_identity="AGE-SECRET-KEY-1X"))
    assert "backup.secrets.known_hosts is empty" in refusal(merged(inline, backup__secrets__known_hosts=""))


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
    assert "postgres.type differential is not supported by this chart yet" in refusal(merged(prod, postgres__type="differential"))
    assert "minio.credentials_secret.name is empty" in refusal(merged(prod, minio__credentials_secret={"name": ""}))


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


def test_kubernetes_validate_cli_strict():
    """The rendered files pass the kubernetes-validate CLI with --strict, and a misspelled field fails it."""
    cli = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values_file("production.yaml"), name="prod", namespace="opencrvs")
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, text in enumerate(manifests.values()):
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


def test_configs_accepted_by_lifeboat():
    """Every rendered Lifeboat configuration loads in the real binary (LIFEBOAT_BIN; tests/deploy_helm.rs
    sets it): with the mounted files stood in for under a temp folder and the server pointed at a closed
    port, `lifeboat list` gets past the configuration (exit 2) and fails connecting (exit 1)."""
    binary = os.environ.get("LIFEBOAT_BIN")
    if not binary:
        print("skip test_configs_accepted_by_lifeboat: LIFEBOAT_BIN is not set")
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(tmp, "id")], check=True)
        with open(os.path.join(tmp, "id.pub")) as f:
            host_key = " ".join(f.read().split()[:2])
        with open(os.path.join(tmp, "id")) as f:
            ssh_key = f.read()
        identity = subprocess.run([binary, "keygen"], capture_output=True, text=True, check=True).stdout
        stand_ins = {"lifeboat/ssh_key": ssh_key, "lifeboat/known_hosts": f"[127.0.0.1]:1 {host_key}\n",
                     "lifeboat/age_identity": identity, "lifeboat/passphrase": "a passphrase\n",
                     "minio/access_key": "minio\n", "minio/secret_key": "minio-secret\n"}
        for store in STORES:
            stand_ins[f"{store}/password"] = "secret\n"
        for path, text in stand_ins.items():
            os.makedirs(os.path.join(tmp, "secrets", os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(tmp, "secrets", path), "w") as f:
                f.write(text)
        os.makedirs(os.path.join(tmp, "work"))
        checked = 0
        for name in ["production.yaml", "staging.yaml", "manual-restore.yaml"]:
            for store, cfg in configs(render(values_file(name))).items():
                user, _, rest = cfg["server"]["url"][len("ssh://"):].partition("@")
                cfg["server"]["url"] = f"ssh://{user}@127.0.0.1:1/{rest.partition('/')[2]}"
                text = yaml.safe_dump(cfg).replace(" /secrets/", f" {tmp}/secrets/").replace("work_dir: /work", f"work_dir: {tmp}/work")
                config = os.path.join(tmp, f"{store}.yaml")
                with open(config, "w") as f:
                    f.write(text)
                r = subprocess.run([binary, "--config", config, "list"], capture_output=True, text=True, timeout=120)
                assert r.returncode == 1 and "configuration" not in r.stderr, (name, store, r.returncode, r.stderr, text)
                checked += 1
        assert checked == 9, checked


def main():
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    failed = 0
    for name, test in tests:
        try:
            test()
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001 - every failure is reported, then the run fails
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
