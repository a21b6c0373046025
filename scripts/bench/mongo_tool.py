#!/usr/bin/env python3
"""MongoDB side of scripts/bench/stores; needs pymongo (the script runs it from its own venv).

    mongo_tool.py gen   URL DB SCALE    drop DB, fill it with registry-like FHIR documents
    mongo_tool.py counts URL DB         print {"collection": documents, ...} and index counts as JSON
    mongo_tool.py dump  URL DB OUTDIR   the mongodump equivalent used by the reference pipeline
    mongo_tool.py restore URL DB INDIR TARGET   the mongorestore equivalent: INDIR/DB into database TARGET

gen: at scale 1, 40,000 registrations in database DB, as OpenCRVS' `hearth` holds them: for each,
one Composition (~1.9 KB BSON), two Patients, one Encounter, four Observations, one Task with its
history, one DocumentReference; ~400,000 documents, ~300 MB of BSON (~7.4 KB per registration) in 6 collections, with
unique and compound indexes. Values: ObjectId, dates, int32/int64, doubles, booleans, nested
documents, arrays, UUID binary, free text. (FerretDB lacks Decimal128.) Inserted with
insert_many(ordered=False) in batches of 1,000 from two threads.

dump: `mongodump --db DB --out OUTDIR` is not installable here (the Go module proxy refuses
github.com/mongodb/mongo-tools, Debian 12 does not package it), so this writes what mongodump
writes: OUTDIR/DB/<collection>.bson (the raw BSON documents, back to back, read as
RawBSONDocument so nothing is decoded) and OUTDIR/DB/<collection>.metadata.json (options and
indexes), which `mongorestore --dir OUTDIR` reads.

restore: `mongorestore` is not installable either; this does what it does by default from a local
dump: drop the target, four collections at once (--numParallelCollections 4), one insertion
worker per collection inserting unordered batches of 1,000 documents as raw BSON (no decoding),
each collection's indexes built after its data.
"""

import datetime
import json
import os
import random
import sys
import threading
import time
import uuid

import bson
from bson import ObjectId
from bson.binary import Binary, UuidRepresentation
from bson.json_util import dumps as ejson
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, DESCENDING, MongoClient

sys.dont_write_bytecode = True  # for common.py in the scripts folder
from common import FAMILY, GIVEN, PLACES, STATUS, run_tool  # noqa: E402

# Bump when the generated data changes: scripts/bench/stores then regenerates instead of reusing.
GEN_VERSION = 1
WORDS = ("the child was born at the health facility registration declared by the mother informant "
         "father national id verified office district province certificate issued correction "
         "requested late registration fee paid attachment proof of birth document").split()

REGISTRATIONS = 40000
COLLECTIONS = ["Composition", "Patient", "Encounter", "Observation", "Task", "DocumentReference"]
INDEXES = {
    "Composition": [([("id", ASCENDING)], {"unique": True}),
                    ([("subject.reference", ASCENDING), ("date", DESCENDING)], {})],
    "Patient": [([("id", ASCENDING)], {"unique": True}), ([("identifier.value", ASCENDING)], {})],
    "Encounter": [([("id", ASCENDING)], {"unique": True})],
    "Observation": [([("id", ASCENDING)], {"unique": True}), ([("context.reference", ASCENDING)], {})],
    "Task": [([("id", ASCENDING)], {"unique": True}),
             ([("businessStatus.coding.code", ASCENDING), ("lastModified", DESCENDING)], {})],
    "DocumentReference": [([("id", ASCENDING)], {"unique": True})],
}


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def when(rng):
    return datetime.datetime(2019, 1, 1) + datetime.timedelta(seconds=rng.randrange(6 * 365 * 86400))


def human(rng):
    return {"use": "en", "given": [rng.choice(GIVEN), rng.choice(GIVEN)], "family": [rng.choice(FAMILY)]}


def registration(rng, i):
    """The documents of one registration, as {collection: [documents]}."""
    t = when(rng)
    cid, child, mother, enc, task, docref = (str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(6))
    ids = lambda: {"system": "http://opencrvs.org/specs/id/national-id", "value": str(rng.randint(10**9, 10**10 - 1))}
    patients = [
        {"_id": ObjectId(), "resourceType": "Patient", "id": child, "active": True,
         "identifier": [ids(), {"system": "birth-registration-number", "value": f"{t.year}{i:010d}"}],
         "name": [human(rng)], "gender": rng.choice(["male", "female"]), "birthDate": t.strftime("%Y-%m-%d"),
         "multipleBirthInteger": rng.randint(1, 2),
         "address": [{"type": "PRIMARY_ADDRESS", "line": [str(rng.randint(1, 300)), "", words(rng, 3)],
                      "district": rng.choice(PLACES), "state": rng.choice(PLACES), "country": "FAR"}],
         "extension": [{"url": "http://opencrvs.org/specs/extension/patient-occupation", "valueString": words(rng, 2)}],
         "meta": {"lastUpdated": t, "versionId": rng.randint(1, 5)}},
        {"_id": ObjectId(), "resourceType": "Patient", "id": mother, "active": True,
         "identifier": [ids()], "name": [human(rng)], "gender": "female",
         "birthDate": (t - datetime.timedelta(days=rng.randint(16 * 365, 45 * 365))).strftime("%Y-%m-%d"),
         "maritalStatus": {"coding": [{"system": "http://hl7.org/fhir/StructureDefinition/marital-status",
                                       "code": rng.choice("MSDW")}]},
         "telecom": [{"system": "phone", "value": f"+260{rng.randint(10**8, 10**9 - 1)}"}],
         "meta": {"lastUpdated": t, "versionId": 1}},
    ]
    composition = {
        "_id": ObjectId(), "resourceType": "Composition", "id": cid, "status": "final",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": "B" + f"{rng.getrandbits(24):06X}"},
        "type": {"coding": [{"system": "http://opencrvs.org/doc-types", "code": "birth-declaration"}],
                 "text": "Birth Declaration"},
        "class": {"coding": [{"system": "http://opencrvs.org/doc-classes", "code": "crvs-document"}]},
        "subject": {"reference": f"Patient/{child}"}, "date": t, "author": [],
        "title": "Birth Declaration",
        "section": [{"title": title, "code": {"coding": [{"system": "http://opencrvs.org/doc-sections", "code": code}],
                                              "text": title},
                     "entry": [{"reference": ref}]}
                    for title, code, ref in (("Child details", "child-details", f"Patient/{child}"),
                                             ("Mother's details", "mother-details", f"Patient/{mother}"),
                                             ("Birth encounter", "birth-encounter", f"Encounter/{enc}"),
                                             ("Supporting documents", "supporting-documents", f"DocumentReference/{docref}"))],
        "meta": {"lastUpdated": t, "versionId": rng.randint(1, 9)},
        "notes": words(rng, rng.randint(5, 60)),
        "_transforms": {"meta": {"lastUpdated": int(t.timestamp() * 1000)}},
        "_request": {"method": "POST"},
    }
    encounter = {"_id": ObjectId(), "resourceType": "Encounter", "id": enc, "status": "finished",
                 "location": [{"location": {"reference": f"Location/{rng.randint(1, 400)}"}}],
                 "period": {"start": t, "end": t + datetime.timedelta(hours=rng.randint(1, 72))},
                 "meta": {"lastUpdated": t}}
    observations = [
        {"_id": ObjectId(), "resourceType": "Observation", "id": str(uuid.UUID(int=rng.getrandbits(128))),
         "status": "final", "context": {"reference": f"Encounter/{enc}"},
         "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": disp}]},
         "valueQuantity": {"value": round(rng.uniform(0.5, 5.0), 3), "unit": unit} if unit else None,
         "valueString": None if unit else rng.choice(["PHYSICIAN", "NURSE", "MIDWIFE", "OTHER"]),
         "valueInteger": rng.randint(0, 12), "issued": t, "meta": {"lastUpdated": t}}
        for code, disp, unit in (("3141-9", "Body weight Measured", "kg"), ("73773-7", "Birth plurality", None),
                                 ("present-at-birth-reg", "Present at birth registration", None),
                                 ("57722-1", "Birth attendant title", None))
    ]
    history = []
    tt = t
    for step in range(rng.randint(2, 6)):
        tt = tt + datetime.timedelta(minutes=rng.randint(5, 20000))
        history.append({"status": STATUS[min(step, len(STATUS) - 1)], "modifiedBy": f"Practitioner/{rng.randint(1, 2000)}",
                        "at": tt, "office": f"Location/{rng.randint(1, 400)}", "comment": words(rng, rng.randint(0, 20)),
                        "durationMs": rng.randint(10**3, 10**9)})
    task = {"_id": ObjectId(), "resourceType": "Task", "id": task, "status": "ready",
            "intent": "proposal", "code": {"coding": [{"system": "http://opencrvs.org/specs/types", "code": "BIRTH"}]},
            "focus": {"reference": f"Composition/{cid}"},
            "identifier": [{"system": "http://opencrvs.org/specs/id/birth-tracking-id",
                            "value": composition["identifier"]["value"]}],
            "businessStatus": {"coding": [{"system": "http://opencrvs.org/specs/reg-status",
                                           "code": history[-1]["status"]}]},
            "lastModified": tt, "history": history, "flagged": rng.random() < 0.05,
            "registrationSequence": bson.int64.Int64(i),
            "correlationId": Binary.from_uuid(uuid.UUID(int=rng.getrandbits(128)), UuidRepresentation.STANDARD),
            "meta": {"lastUpdated": tt}}
    doc = {"_id": ObjectId(), "resourceType": "DocumentReference", "id": docref, "status": "current",
           "docStatus": "final", "subject": {"display": rng.choice(["MOTHER", "CHILD", "FATHER"])},
           "type": [{"coding": [{"system": "http://opencrvs.org/specs/supporting-doc-type",
                                 "code": rng.choice(["NATIONAL_ID", "PROOF_OF_BIRTH", "BIRTH_CERTIFICATE"])}]}],
           "content": [{"attachment": {"contentType": "image/jpeg",
                                       "data": f"/ocrvs/{uuid.UUID(int=rng.getrandbits(128))}.jpg"}}],
           "thumbnail": Binary(os.urandom(rng.randint(200, 600))), "indexed": t}
    return {"Composition": [composition], "Patient": patients, "Encounter": [encounter],
            "Observation": observations, "Task": [task], "DocumentReference": [doc]}


def gen(url, dbname, scale):
    t0 = time.monotonic()
    client = MongoClient(url, uuidRepresentation="standard")
    client.drop_database(dbname)
    db = client[dbname]
    for name in COLLECTIONS:
        db.create_collection(name)
        for keys, opts in INDEXES[name]:
            db[name].create_index(keys, **opts)
    n = max(10, round(REGISTRATIONS * scale))
    threads = 2
    errors = []
    progress = [0]
    lock = threading.Lock()

    def worker(part):
        rng = random.Random(1000 + part)
        buf = {c: [] for c in COLLECTIONS}
        try:
            for i in range(part, n, threads):
                for c, docs in registration(rng, i).items():
                    buf[c].extend(docs)
                    if len(buf[c]) >= 1000:
                        db[c].insert_many(buf[c], ordered=False)
                        buf[c] = []
                with lock:
                    progress[0] += 1
                    if progress[0] % 5000 == 0:
                        print(f"    {progress[0]} registrations, {time.monotonic() - t0:.0f} s",
                              file=sys.stderr, flush=True)
            for c, docs in buf.items():
                if docs:
                    db[c].insert_many(docs, ordered=False)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(p,)) for p in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        sys.exit("mongo gen failed: " + errors[0])
    print(json.dumps({"registrations": n, "seconds": round(time.monotonic() - t0, 1)}))


def counts(url, dbname, quiet=False):
    client = MongoClient(url)
    db = client[dbname]
    docs, idx, size = {}, {}, 0
    for name in sorted(db.list_collection_names()):
        docs[name] = db[name].count_documents({})
        idx[name] = len(list(db[name].list_indexes()))
        try:
            size += int(db.command("collStats", name).get("size", 0))
        except Exception:  # noqa: BLE001
            pass
    out = {"documents": docs, "indexes": idx, "data_size": size}
    if not quiet:
        print(json.dumps(out))
    return out


def dump(url, dbname, outdir):
    client = MongoClient(url, document_class=RawBSONDocument)
    db = client[dbname]
    d = os.path.join(outdir, dbname)
    os.makedirs(d, exist_ok=True)
    total = {}
    plain = MongoClient(url)[dbname]
    for info in plain.list_collections():
        name = info["name"]
        n = 0
        with open(os.path.join(d, f"{name}.bson"), "wb", buffering=1 << 20) as f:
            for doc in db[name].find({}, batch_size=2000):
                f.write(doc.raw)
                n += 1
        meta = {"options": info.get("options", {}), "indexes": list(plain[name].list_indexes()),
                "uuid": "", "collectionName": name, "type": info.get("type", "collection")}
        with open(os.path.join(d, f"{name}.metadata.json"), "w") as f:
            f.write(ejson(meta))
        total[name] = n
    print(json.dumps(total))


def restore(url, dbname, indir, target):
    from concurrent.futures import ThreadPoolExecutor
    from bson import decode_file_iter
    from bson.codec_options import CodecOptions
    from bson.json_util import loads as ejson_loads
    client = MongoClient(url, document_class=RawBSONDocument)
    client.drop_database(target)
    db = client[target]
    d = os.path.join(indir, dbname)
    names = sorted(f[:-len(".bson")] for f in os.listdir(d) if f.endswith(".bson"))
    raw = CodecOptions(document_class=RawBSONDocument)

    def load(name):
        meta = ejson_loads(open(os.path.join(d, f"{name}.metadata.json")).read())
        db.create_collection(name, **meta.get("options", {}))
        n, batch = 0, []
        with open(os.path.join(d, f"{name}.bson"), "rb") as f:
            for doc in decode_file_iter(f, codec_options=raw):
                batch.append(doc)
                if len(batch) == 1000:
                    db[name].insert_many(batch, ordered=False)
                    n, batch = n + len(batch), []
        if batch:
            db[name].insert_many(batch, ordered=False)
            n += len(batch)
        indexes = [dict(i) for i in meta.get("indexes", []) if i.get("name") != "_id_"]
        for i in indexes:
            i.pop("v", None)
            i.pop("ns", None)
        if indexes:
            db.command({"createIndexes": name, "indexes": indexes})
        return name, n

    with ThreadPoolExecutor(4) as pool:
        total = dict(pool.map(load, names))
    print(json.dumps(total))


if __name__ == "__main__":
    run_tool(__doc__, {"gen": lambda url, db, scale: gen(url, db, float(scale)), "counts": counts, "dump": dump,
                       "restore": restore})
