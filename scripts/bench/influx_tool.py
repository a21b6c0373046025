#!/usr/bin/env python3
"""InfluxDB 1.x side of scripts/bench/stores (Python 3 stdlib only, HTTP API).

    influx_tool.py gen    HTTP_URL DB SCALE   drop DB, fill it with OpenCRVS-like metrics
    influx_tool.py counts HTTP_URL DB         print {"points": {measurement: n}, "series": n}

gen: at scale 1, 3,000,000 points over 120 days (default retention policy, so ~18 shards of
7 days) in 5 measurements shaped like OpenCRVS' metrics database: registrations,
in_complete_fields, user_audit_event, declaration_time_spent, certification_payment; ~25,000
series (tags: office, district, event type, practitioner...). Every point has its own timestamp, so
no point overwrites another and the counts are exact. Written as line protocol in batches of
10,000 points (precision ns).
"""

import json
import random
import sys
import time
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # for common.py in the scripts folder
from common import run_tool  # noqa: E402

# Bump when the generated data changes: scripts/bench/stores then regenerates instead of reusing.
GEN_VERSION = 1
POINTS = 3_000_000
DAYS = 120
EVENTS = ["birth", "death"]
STATUS = ["DECLARED", "VALIDATED", "REGISTERED", "CERTIFIED", "REJECTED", "IN_PROGRESS"]
ACTIONS = ["LOGGED_IN", "LOGGED_OUT", "DECLARED", "VALIDATED", "REGISTERED", "PRINTED", "VIEWED",
           "ARCHIVED", "CORRECTED", "SEARCHED"]
# (measurement, share of points)
MEASUREMENTS = [("registrations", 0.30), ("in_complete_fields", 0.10), ("user_audit_event", 0.35),
                ("declaration_time_spent", 0.15), ("certification_payment", 0.10)]


def post(url, path, params, body=None):
    q = urllib.parse.urlencode(params)
    req = urllib.request.Request(f"{url}{path}?{q}", data=body if body is not None else b"", method="POST")
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.read()


def query(url, db, q):
    u = f"{url}/query?" + urllib.parse.urlencode({"db": db, "q": q})
    with urllib.request.urlopen(u, timeout=600) as r:
        return json.loads(r.read())


def line(rng, m, ts):
    off = rng.randint(1, 200)
    dist = off % 40 + 1
    ev = rng.choice(EVENTS)
    if m == "registrations":
        return (f"registrations,eventType={ev},officeLocation=Location/office-{off},locationLevel2=Location/district-{dist},"
                f"regStatus={rng.choice(STATUS)},gender={rng.choice(('male', 'female'))} "
                f"compositionId=\"{rng.getrandbits(64):016x}\",ageInDays={rng.randint(0, 36500)}i,"
                f"registrarPractitionerId=\"Practitioner/{rng.randint(1, 2000)}\",late={str(rng.random() < 0.2).lower()} {ts}")
    if m == "in_complete_fields":
        return (f"in_complete_fields,eventType={ev},officeLocation=Location/office-{off},"
                f"missingFieldSectionId={rng.choice(('child', 'mother', 'father', 'informant', 'documents'))} "
                f"compositionId=\"{rng.getrandbits(64):016x}\",missingFieldId=\"{rng.choice(('birthDate', 'nid', 'address', 'weight'))}\" {ts}")
    if m == "user_audit_event":
        return (f"user_audit_event,action={rng.choice(ACTIONS)},practitionerId=Practitioner/{rng.randint(1, 2000)} "
                f"ipAddress=\"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}\","
                f"userAgent=\"Mozilla/5.0 (Linux; Android {rng.randint(8, 14)}) Chrome/{rng.randint(100, 130)}.0\","
                f"data=\"{rng.getrandbits(96):024x}\" {ts}")
    if m == "declaration_time_spent":
        return (f"declaration_time_spent,eventType={ev},officeLocation=Location/office-{off},"
                f"section={rng.choice(('child', 'mother', 'father', 'informant', 'documents', 'review'))} "
                f"timeSpentEditing={rng.uniform(1, 900):.3f},compositionId=\"{rng.getrandbits(64):016x}\" {ts}")
    return (f"certification_payment,eventType={ev},officeLocation=Location/office-{off},"
            f"locationLevel2=Location/district-{dist} total={rng.choice((5, 10, 15, 25, 50))}.0,"
            f"compositionId=\"{rng.getrandbits(64):016x}\" {ts}")


def gen(url, db, scale):
    t0 = time.monotonic()
    post(url, "/query", {"q": f'DROP DATABASE "{db}"'})
    post(url, "/query", {"q": f'CREATE DATABASE "{db}"'})
    n = max(1000, round(POINTS * scale))
    rng = random.Random(42)
    start = int(time.time() - DAYS * 86400) * 10**9
    step = DAYS * 86400 * 10**9 // n
    names = [m for m, _ in MEASUREMENTS]
    weights = [w for _, w in MEASUREMENTS]
    batch = []
    for i in range(n):
        m = rng.choices(names, weights)[0]
        batch.append(line(rng, m, start + i * step + rng.randrange(step)))
        if len(batch) == 10000 or i == n - 1:
            post(url, "/write", {"db": db, "precision": "ns"}, "\n".join(batch).encode())
            batch = []
            if (i + 1) % 500000 == 0:
                print(f"    {i + 1} points, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    print(json.dumps({"points": n, "seconds": round(time.monotonic() - t0, 1)}))


# a field every point of the measurement has
COUNT_FIELD = {"registrations": "ageInDays", "in_complete_fields": "compositionId",
               "user_audit_event": "data", "declaration_time_spent": "timeSpentEditing",
               "certification_payment": "total"}


def counts(url, db, quiet=False):
    points = {}
    r = query(url, db, "SHOW MEASUREMENTS")
    ms = [v[0] for s in r["results"][0].get("series", []) for v in s["values"]]
    for m in ms:
        f = COUNT_FIELD.get(m)
        if f is None:
            r = query(url, db, f'SHOW FIELD KEYS FROM "{m}"')
            f = r["results"][0]["series"][0]["values"][0][0]
        r = query(url, db, f'SELECT count("{f}") FROM "{m}"')
        s = r["results"][0].get("series")
        points[m] = int(s[0]["values"][0][1]) if s else 0
    r = query(url, db, "SHOW SERIES EXACT CARDINALITY")
    series = sum(int(s["values"][0][0]) for s in r["results"][0].get("series", []))
    out = {"points": points, "series": series}
    if not quiet:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    run_tool(__doc__, {"gen": lambda url, db, scale: gen(url, db, float(scale)), "counts": counts})
