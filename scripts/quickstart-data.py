#!/usr/bin/env python3
"""Seeds, fingerprints and wipes the quick start's MongoDB, InfluxDB and MinIO data.

usage: quickstart-data.py seed|fingerprint|wipe

The fingerprint covers every document, point and object (with its metadata), so comparing the
fingerprint before the backup and after the restore proves the data came back whole.
"""
import datetime
import hashlib
import json
import os
import sys
import urllib.parse
import urllib.request

import boto3
import bson
import pymongo
from botocore.config import Config

STATE = os.environ.get("LIFEBOAT_TEST_STATE", "/var/tmp/lifeboat-test/state")
# The servers' ports: the NAME=PORT lines of scripts/servers/ports, the one table of them.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "servers", "ports")) as table:
    PORTS = dict(line.strip().split("=", 1) for line in table if "=" in line and not line.startswith("#"))
MONGO_URL = f"mongodb://127.0.0.1:{PORTS['MONGO_PORT']}"
MONGO_DB = "quickstart_hearth"
INFLUX = f"http://127.0.0.1:{PORTS['INFLUX_HTTP_PORT']}"
INFLUX_DB = "quickstart_metrics"
S3_URL = f"http://127.0.0.1:{PORTS['MINIO_PORT']}"
BUCKET = "quickstart-documents"


def s3():
    key = open(os.path.join(STATE, "s3-access-key")).read().strip()
    secret = open(os.path.join(STATE, "s3-secret-key")).read().strip()
    return boto3.client("s3", endpoint_url=S3_URL, aws_access_key_id=key, aws_secret_access_key=secret,
                        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))


def influx(q, method="POST"):
    data = urllib.parse.urlencode({"q": q, "db": INFLUX_DB}).encode()
    req = urllib.request.Request(f"{INFLUX}/query", data=data if method == "POST" else None, method=method)
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def seed():
    client = pymongo.MongoClient(MONGO_URL)
    client.drop_database(MONGO_DB)
    db = client[MONGO_DB]
    people = db["patients"]
    people.create_index("nid", unique=True)
    base = datetime.datetime(1950, 1, 1, tzinfo=datetime.timezone.utc)
    people.insert_many([
        {"_id": bson.ObjectId(), "nid": f"NG-{i:08d}", "name": {"given": ["Zoë", "José", "Ngozi", "Åsa"][i % 4], "family": f"Family-{i}"},
         "born": base + datetime.timedelta(days=i * 3), "events": [{"kind": "birth", "at": base + datetime.timedelta(days=i)}],
         "photo": bson.Binary(hashlib.sha256(str(i).encode()).digest()), "tags": ["registered", f"district-{i % 17}"]}
        for i in range(5000)
    ])
    db["tasks"].insert_many([{"n": i, "status": "done" if i % 3 else "open"} for i in range(1200)])

    influx(f"DROP DATABASE {INFLUX_DB}")
    influx(f"CREATE DATABASE {INFLUX_DB}")
    lines = []
    t0 = 1_700_000_000_000_000_000
    for i in range(20000):
        lines.append(f"registrations,district=d{i % 12},kind={'birth' if i % 5 else 'death'} count={i % 7}i,latency={i / 10.0} {t0 + i * 1_000_000_000}")
    req = urllib.request.Request(f"{INFLUX}/write?db={INFLUX_DB}", data="\n".join(lines).encode(), method="POST")
    urllib.request.urlopen(req).read()

    c = s3()
    wipe_bucket(c)
    c.create_bucket(Bucket=BUCKET)
    for i in range(300):
        key = f"certificates/{i % 10}/birth certificate №{i}.json" if i % 2 else f"photos/district-{i % 7}/Zoë-{i}.bin"
        body = json.dumps({"certificate": i, "holder": "Ngozi Okafor"}).encode() * (1 + i % 20)
        c.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType="application/json" if i % 2 else "application/octet-stream",
                     Metadata={"registrar": f"office-{i % 5}"})
    c.put_object(Bucket=BUCKET, Key="empty-object", Body=b"")


def wipe_bucket(c):
    try:
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for o in page.get("Contents", []):
                c.delete_object(Bucket=BUCKET, Key=o["Key"])
        c.delete_bucket(Bucket=BUCKET)
    except c.exceptions.NoSuchBucket:
        pass


def fingerprint():
    h = {}
    db = pymongo.MongoClient(MONGO_URL)[MONGO_DB]
    docs = hashlib.sha256()
    for name in sorted(db.list_collection_names()):
        for d in db[name].find().sort("_id", 1):
            docs.update(bson.encode(d))
        h[f"mongodb {name}"] = db[name].count_documents({})
    h["mongodb unique nid index"] = any(ix.get("unique") for ix in db["patients"].list_indexes())
    h["mongodb sha256"] = docs.hexdigest()[:16]
    res = influx("SELECT count(latency), sum(count) FROM registrations", method="POST")
    h["influxdb points, sum"] = res["results"][0].get("series", [{}])[0].get("values")
    c = s3()
    objs = hashlib.sha256()
    n = 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for o in page.get("Contents", []):
            got = c.get_object(Bucket=BUCKET, Key=o["Key"])
            body = hashlib.sha256(got["Body"].read()).hexdigest()
            objs.update(json.dumps([o["Key"], o["Size"], body, got["ContentType"], got["Metadata"]]).encode())
            n += 1
    h["minio objects"] = n
    h["minio sha256"] = objs.hexdigest()[:16]
    print(json.dumps(h, sort_keys=True, default=str))


def wipe():
    pymongo.MongoClient(MONGO_URL).drop_database(MONGO_DB)
    influx(f"DROP DATABASE {INFLUX_DB}")
    wipe_bucket(s3())


if __name__ == "__main__":
    {"seed": seed, "fingerprint": fingerprint, "wipe": wipe}[sys.argv[1]]()
