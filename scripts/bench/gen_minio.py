#!/usr/bin/env python3
"""MinIO data set for scripts/bench/stores (Python 3 stdlib only).

    gen_minio.py ENDPOINT ACCESS_KEY_FILE SECRET_KEY_FILE BUCKET SCALE

Empties BUCKET (creating it when missing) and fills it with a registry-like attachment store,
written straight to S3 (nothing on local disk). At scale 1: 10,000 objects, ~2.0 GB:
  documents/YYYY/MM/<id>.json   8,450 JSON documents, 1-48 KB, compress ~5x
  images/<office>/<id>.jpg       1,300 photo-like files, 40 KB-1.2 MB, mostly random bytes
  scans/<YYYY>/<id>.pdf            240 scan-like files, 1-12 MB: random 64 KB blocks (images)
                                       mixed with text blocks (~30 %), compress ~1.3x
  exports/<name>.csv                8 CSV exports, 5-25 MB, one of ~110 MB (multipart-sized)
  misc/ (2 keys with spaces and unicode, 2 empty objects)
Content types and some x-amz-meta-* are set. Sizes come from a seeded RNG, so the same scale
gives the same keys and sizes; the random bytes are fresh each time.
Prints one JSON line: {"objects": N, "bytes": B, "seconds": S}.
"""

import concurrent.futures as cf
import json
import os
import random
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import s3  # noqa: E402
from common import FAMILY, GIVEN, PLACES, STATUS  # noqa: E402

# Bump when the generated data changes: scripts/bench/stores then regenerates instead of reusing.
GEN_VERSION = 1
EVENTS = ["birth", "death", "marriage"]


def text_pool(rng, size):
    """JSON-object lines of registry records, ~size bytes; returns (bytes, line offsets)."""
    lines, offs, n = [], [], 0
    i = 0
    while n < size:
        i += 1
        rec = {
            "trackingId": "B" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6)),
            "registrationNumber": f"{rng.randint(2015, 2024)}{rng.randint(10**9, 10**10 - 1)}",
            "event": rng.choice(EVENTS), "status": rng.choice(STATUS),
            "child": {"given": rng.choice(GIVEN), "family": rng.choice(FAMILY),
                      "birthDate": f"{rng.randint(1990, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                      "gender": rng.choice(["male", "female"]), "weightKg": round(rng.uniform(1.8, 4.9), 2)},
            "mother": {"given": rng.choice(GIVEN), "family": rng.choice(FAMILY), "nid": rng.randint(10**9, 10**10 - 1)},
            "place": {"district": rng.choice(PLACES), "office": f"office-{rng.randint(1, 200)}",
                      "lat": round(rng.uniform(-18, 12), 5), "lon": round(rng.uniform(-5, 35), 5)},
            "history": [{"action": rng.choice(STATUS), "by": f"user-{rng.randint(1, 2000)}",
                         "at": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                               f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"}
                        for _ in range(rng.randint(1, 4))],
            "comment": " ".join(rng.choice(GIVEN + PLACES + STATUS) for _ in range(rng.randint(0, 12))),
        }
        line = (json.dumps(rec, ensure_ascii=False) + ",\n").encode()
        offs.append(n)
        lines.append(line)
        n += len(line)
    return b"".join(lines), offs


class Content:
    def __init__(self, seed):
        rng = random.Random(seed)
        self.pool, self.offs = text_pool(rng, 6 * 1024 * 1024)
        self.lock = threading.Lock()

    def text(self, rng, n):
        """n bytes of record lines, starting at a random line of the pool."""
        out, have = [], 0
        while have < n:
            start = self.offs[rng.randrange(len(self.offs))]
            piece = self.pool[start:start + min(n - have, 256 * 1024)]
            out.append(piece)
            have += len(piece)
        return b"".join(out)[:n]

    def json_doc(self, rng, n, ident):
        head = f'{{"id": "{ident}", "schema": "opencrvs/record/v1", "records": [\n'.encode()
        body = self.text(rng, max(0, n - len(head) - 4))
        cut = body.rfind(b",\n")
        body = body[:cut] if cut > 0 else b'{}'
        return head + body + b"\n]}\n"

    def csv(self, rng, n):
        """CSV rows: fresh ids per row, the other columns drawn from a few thousand variants."""
        tails = [(f",{rng.choice(EVENTS)},{rng.choice(STATUS)},{rng.choice(GIVEN)},{rng.choice(FAMILY)},"
                  f"{rng.randint(1950, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
                  f"{rng.choice(PLACES)},office-{rng.randint(1, 200)}\n").encode() for _ in range(4000)]
        rows = [b"tracking_id,registration_number,event,status,given,family,birth_date,district,office\n"]
        have = len(rows[0])
        while have < n:
            nl = 20000
            hx = os.urandom(8 * nl).hex().upper().encode()
            pick = [tails[rng.randrange(4000)] for _ in range(nl)]
            chunk = b"".join(b"B%s,%d%s" % (hx[16 * j:16 * j + 6], int(hx[16 * j + 6:16 * j + 16], 16) % 10**10, pick[j])
                             for j in range(nl))
            rows.append(chunk)
            have += len(chunk)
        return b"".join(rows)[:n]

    @staticmethod
    def image(rng, n):
        # a JPEG-ish header, then entropy-coded (random) data with a little structure
        head = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(256)) * 2
        return (head + os.urandom(max(0, n - len(head))))[:n]

    def scan(self, rng, n):
        """PDF-ish: header, then 64 KB blocks, ~30 % text streams, the rest image streams."""
        parts = [b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"]
        have = len(parts[0])
        while have < n:
            k = min(65536, n - have)
            parts.append(self.text(rng, k) if rng.random() < 0.30 else os.urandom(k))
            have += k
        return b"".join(parts)[:n]


def plan(scale, rng):
    """[(key, size, kind, content_type, meta)] for this scale."""
    objs = []
    nd, ni, ns, ne = (max(1, round(x * scale)) for x in (8450, 1300, 240, 8))
    for i in range(nd):
        size = int(1024 * 48 ** rng.random())  # 1-48 KB, log-uniform
        objs.append((f"documents/{rng.randint(2019, 2024)}/{rng.randint(1, 12):02d}/{i:06d}-{rng.randrange(16**8):08x}.json",
                     size, "json", "application/json", {"record-type": rng.choice(EVENTS)}))
    for i in range(ni):
        size = int(40 * 1024 * 30 ** rng.random())  # 40 KB - 1.2 MB
        objs.append((f"images/office-{rng.randint(1, 200)}/{i:06d}.jpg", size, "image", "image/jpeg",
                     {"uploaded-by": f"user-{rng.randint(1, 2000)}"} if i % 3 == 0 else {}))
    for i in range(ns):
        size = int(1024 * 1024 * 12 ** rng.random())  # 1-12 MB
        objs.append((f"scans/{rng.randint(2019, 2024)}/{i:05d}.pdf", size, "scan", "application/pdf",
                     {"pages": str(rng.randint(1, 40))}))
    for i in range(ne):
        size = int(1024 * 1024 * rng.uniform(5, 25))
        if i == 0 and scale >= 0.5:
            size = 110 * 1024 * 1024
        objs.append((f"exports/registrations-{2015 + i}.csv", size, "csv", "text/csv", {}))
    objs += [("misc/with space/naïve résumé ü.json", 2048, "json", "application/json", {}),
             ("misc/深い/パス/ファイル.json", 4096, "json", "application/json", {}),
             ("misc/empty-marker", 0, "empty", "application/octet-stream", {}),
             ("misc/deep/a/b/c/d/e/f/empty.txt", 0, "empty", "text/plain", {})]
    return objs


def main():
    endpoint, akf, skf, bucket, scale = sys.argv[1:6]
    scale = float(scale)
    client = s3.S3(endpoint, open(akf).read().strip(), open(skf).read().strip())
    t0 = time.monotonic()
    if client.bucket_exists(bucket):
        keys = [k for k, _, _ in client.list(bucket)]
        if keys:
            print(f"  emptying bucket {bucket} ({len(keys)} objects)", file=sys.stderr, flush=True)
            client.delete_many(bucket, keys)
    else:
        client.create_bucket(bucket)
    rng = random.Random(20240501)
    content = Content(7)
    objs = plan(scale, rng)
    rng.shuffle(objs)
    total = sum(o[1] for o in objs)
    print(f"  uploading {len(objs)} objects, {total / 1e6:,.0f} MB to bucket {bucket}", file=sys.stderr, flush=True)
    done = [0, 0]
    lock = threading.Lock()

    def one(idx_obj):
        idx, (key, size, kind, ctype, meta) = idx_obj
        r = random.Random(idx * 7919 + 1)
        if kind == "json":
            body = content.json_doc(r, size, key)
            body = body.ljust(size, b" ")
        elif kind == "image":
            body = Content.image(r, size)
        elif kind == "scan":
            body = content.scan(r, size)
        elif kind == "csv":
            body = content.csv(r, size)
        else:
            body = b""
        client.put(bucket, key, body, content_type=ctype, meta=meta)
        with lock:
            done[0] += 1
            done[1] += size
            if done[0] % 1000 == 0:
                print(f"    {done[0]} objects, {done[1] / 1e6:,.0f} MB, {time.monotonic() - t0:.0f} s",
                      file=sys.stderr, flush=True)

    with cf.ThreadPoolExecutor(4) as ex:
        for f in [ex.submit(one, x) for x in enumerate(objs)]:
            f.result()
    print(json.dumps({"objects": len(objs), "bytes": total, "seconds": round(time.monotonic() - t0, 1)}))


if __name__ == "__main__":
    main()
