"""A minimal S3 client for the benchmark: Python 3 stdlib only (http.client, SigV4, path-style).

Enough to create a bucket, upload objects (single PUT, unsigned payload), list a bucket and
delete objects. Used by scripts/bench/stores to generate the MinIO data set and to check it after
a restore; the timed pipelines use `mc` / the AWS CLI and Lifeboat, never this.
"""

import datetime
import hashlib
import hmac
import http.client
import threading
import urllib.parse
import xml.etree.ElementTree as ET

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Error(Exception):
    pass


def _q(s, safe="-_.~"):
    return urllib.parse.quote(s, safe=safe)


class S3:
    def __init__(self, endpoint, access_key, secret_key, region="us-east-1"):
        u = urllib.parse.urlparse(endpoint)
        if u.scheme != "http":
            raise S3Error("only http:// endpoints are supported by this helper")
        self.host, self.port = u.hostname, u.port or 80
        self.hostport = u.netloc
        self.ak, self.sk, self.region = access_key, secret_key, region
        self._local = threading.local()

    def _conn(self):
        c = getattr(self._local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(self.host, self.port, timeout=300)
            self._local.conn = c
        return c

    def _sign(self, method, path, query, headers, payload_hash):
        now = datetime.datetime.now(datetime.timezone.utc)
        amzdate, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = dict(headers)
        headers["host"] = self.hostport
        headers["x-amz-date"] = amzdate
        headers["x-amz-content-sha256"] = payload_hash
        lower = {k.lower(): str(v).strip() for k, v in headers.items()}
        signed = ";".join(sorted(lower))
        canon_headers = "".join(f"{k}:{lower[k]}\n" for k in sorted(lower))
        canon_query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(query.items()))
        canon = "\n".join([method, _q(path, safe="/-_.~"), canon_query, canon_headers, signed, payload_hash])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope, hashlib.sha256(canon.encode()).hexdigest()])
        k = ("AWS4" + self.sk).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.ak}/{scope}, "
                                    f"SignedHeaders={signed}, Signature={sig}")
        return headers, canon_query

    def request(self, method, path, query=None, body=b"", headers=None, ok=(200, 204)):
        query = query or {}
        payload_hash = "UNSIGNED-PAYLOAD" if body else hashlib.sha256(b"").hexdigest()
        hdrs, cq = self._sign(method, path, query, headers or {}, payload_hash)
        url = _q(path, safe="/-_.~") + (("?" + cq) if cq else "")
        for attempt in range(3):
            c = self._conn()
            try:
                c.request(method, url, body=body if body else None, headers=hdrs)
                r = c.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, OSError):
                c.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        if r.status not in ok:
            raise S3Error(f"{method} {path}: HTTP {r.status}: {data[:300].decode(errors='replace')}")
        return r.status, data, r

    # -- buckets
    def bucket_exists(self, bucket):
        st, _, _ = self.request("HEAD", f"/{bucket}", ok=(200, 404))
        return st == 200

    def create_bucket(self, bucket):
        self.request("PUT", f"/{bucket}", ok=(200, 409))

    def put(self, bucket, key, body, content_type=None, meta=None):
        h = {"Content-Length": str(len(body))}
        if content_type:
            h["Content-Type"] = content_type
        for k, v in (meta or {}).items():
            h[f"x-amz-meta-{k}"] = v
        self.request("PUT", f"/{bucket}/{key}", body=body, headers=h)

    def list(self, bucket, prefix=""):
        """Yield (key, size, etag) of every object in the bucket."""
        token = None
        while True:
            q = {"list-type": "2", "max-keys": "1000"}
            if prefix:
                q["prefix"] = prefix
            if token:
                q["continuation-token"] = token
            _, data, _ = self.request("GET", f"/{bucket}", query=q)
            root = ET.fromstring(data)
            for c in root.findall(f"{NS}Contents"):
                yield (c.find(f"{NS}Key").text, int(c.find(f"{NS}Size").text),
                       (c.find(f"{NS}ETag").text or "").strip('"'))
            if root.findtext(f"{NS}IsTruncated") == "true":
                token = root.findtext(f"{NS}NextContinuationToken")
            else:
                return

    def delete_many(self, bucket, keys):
        keys = list(keys)
        for i in range(0, len(keys), 1000):
            chunk = keys[i:i + 1000]
            body = ("<Delete><Quiet>true</Quiet>" + "".join(
                f"<Object><Key>{_xml(k)}</Key></Object>" for k in chunk) + "</Delete>").encode()
            md5 = __import__("base64").b64encode(hashlib.md5(body).digest()).decode()
            self.request("POST", f"/{bucket}", query={"delete": ""}, body=body,
                         headers={"Content-MD5": md5, "Content-Length": str(len(body))})


def _xml(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
