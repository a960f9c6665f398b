"""An in-memory S3-compatible stand-in that adds a fixed latency to every request, and counts them.

Enough of S3 for the collector (path-style): ``PUT``/``GET``/``HEAD`` objects with ``If-None-Match:
*`` and ``If-Match`` (412 PreconditionFailed; 404 NoSuchKey for If-Match on a missing key, as moto
and R2 answer), ``HEAD`` bucket, ``ListObjectsV2``. No authentication. Each request waits
``--latency-ms`` before it is answered (a distant bucket), and is counted by method and by what
its key is (submission, status, other). ``GET /__counts`` answers the counts as JSON and
``POST /__reset`` zeroes them, ``POST /__latency?ms=N`` sets the latency; none of these waits or counts.

One asyncio process (uvloop) serves thousands of requests per second, so with a few hundred
requests in flight the stand-in, not being the bottleneck, leaves the latency as the only limit::

    python bench/s3_standin.py --port 9000 --latency-ms 30
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

objects: dict[str, tuple[bytes, str, datetime]] = {}  # "bucket/key" -> body, etag, modified
buckets: set[str] = set()
counts: Counter[str] = Counter()
settings = {"latency": 0.0}  # seconds added to every request


Answer = tuple[int, str, dict[str, str], bytes]  # status, reason, headers, body


def _error(status: int, code: str, reason: str) -> Answer:
    body = f'<?xml version="1.0"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'
    return status, reason, {"Content-Type": "application/xml"}, body.encode()


def _kind(key: str) -> str:
    if "/submissions/" in key:
        return "submission"
    return "status" if key.endswith("status.json") else "other"


def handle(method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
    split = urlsplit(target)
    path = unquote(split.path).lstrip("/")
    bucket, _, key = path.partition("/")
    counts[f"{method} {_kind(key) if key else 'bucket'}"] += 1
    if not key:
        if method == "PUT":
            buckets.add(bucket)
            return 200, "OK", {}, b""
        if bucket not in buckets:
            return _error(404, "NoSuchBucket", "Not Found")
        if method == "HEAD":
            return 200, "OK", {}, b""
        if method == "GET":
            prefix = parse_qs(split.query).get("prefix", [""])[0]
            items = sorted(
                (k.partition("/")[2], v) for k, v in objects.items() if k.startswith(f"{bucket}/{prefix}")
            )
            contents = "".join(
                f"<Contents><Key>{escape(k)}</Key><Size>{len(v[0])}</Size>"
                f"<LastModified>{v[2].strftime('%Y-%m-%dT%H:%M:%S.000Z')}</LastModified>"
                f'<ETag>"{v[1]}"</ETag></Contents>'
                for k, v in items
            )
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>'
                f"{bucket}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(items)}</KeyCount>"
                f"<IsTruncated>false</IsTruncated>{contents}</ListBucketResult>"
            )
            return 200, "OK", {"Content-Type": "application/xml"}, xml.encode()
        return _error(405, "MethodNotAllowed", "Method Not Allowed")
    if bucket not in buckets:
        return _error(404, "NoSuchBucket", "Not Found")
    name = f"{bucket}/{key}"
    current = objects.get(name)
    if method == "PUT":
        if headers.get("if-none-match") == "*" and current is not None:
            return _error(412, "PreconditionFailed", "Precondition Failed")
        if "if-match" in headers:
            if current is None:
                return _error(404, "NoSuchKey", "Not Found")
            if headers["if-match"].strip('"') != current[1]:
                return _error(412, "PreconditionFailed", "Precondition Failed")
        etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
        objects[name] = (body, etag, datetime.now(UTC))
        return 200, "OK", {"ETag": f'"{etag}"'}, b""
    if method in ("GET", "HEAD"):
        if current is None:
            return _error(404, "NoSuchKey", "Not Found")
        answer_headers = {
            "ETag": f'"{current[1]}"',
            "Content-Type": "application/json",
            "Last-Modified": current[2].strftime("%a, %d %b %Y %H:%M:%S GMT"),
        }
        return 200, "OK", answer_headers, current[0] if method == "GET" else b""
    if method == "DELETE":
        objects.pop(name, None)
        return 204, "No Content", {}, b""
    return _error(405, "MethodNotAllowed", "Method Not Allowed")


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # boto3 waits for it before the body
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            if target.startswith("/__counts"):
                status, reason, extra, payload = 200, "OK", {}, json.dumps(counts).encode()
            elif target.startswith("/__reset"):
                counts.clear()
                status, reason, extra, payload = 200, "OK", {}, b"{}"
            elif target.startswith("/__latency"):
                settings["latency"] = float(parse_qs(urlsplit(target).query)["ms"][0]) / 1000
                status, reason, extra, payload = 200, "OK", {}, b"{}"
            else:
                if settings["latency"]:
                    await asyncio.sleep(settings["latency"])
                status, reason, extra, payload = handle(method, target, headers, body)
            extra.setdefault("Content-Length", str(len(payload)))
            if method == "HEAD":
                payload = b""
            out = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in extra.items())
            writer.write(out.encode("latin-1") + b"\r\n" + payload)
    finally:
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket at start")
    args = parser.parse_args()
    buckets.update(args.bucket)
    settings["latency"] = args.latency_ms / 1000

    async def run() -> None:
        server = await asyncio.start_server(serve_connection, "127.0.0.1", args.port, backlog=4096)
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())


if __name__ == "__main__":
    main()
